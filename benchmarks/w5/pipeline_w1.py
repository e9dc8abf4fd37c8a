"""The steps that need the model in the benchmark's own hands (run in a child process): the random checkpoint,
and W1 through the pipeline (the figure the servers' W1 is held against, measured in the same run)."""

import random

import checkpoint
import ours
import workloads
from phases import throughput


def first_special(tiny):
    return checkpoint.first_special_id(checkpoint.TINY if tiny else checkpoint.LLAMA3_8B)


def w1_workload(requests, tiny, variant=0):
    """bench_llama's W1; a variant > 0 keeps every prompt's and output's length but draws other token ids.
    The deployment caches prefixes: a front end sent the prompts another one (or the warm-up) already ran
    would find them cached and beat the pipeline (the H200's gRPC W1, run after HTTP's, did: 1.25x)."""
    w1 = workloads.make_w1(requests, first_special(tiny), tiny)
    if not variant:
        return w1
    rng = random.Random(f"w1-variant-{variant}")
    prompts = [[rng.randrange(first_special(tiny)) for _ in prompt] for prompt in w1.prompts]
    return workloads.Workload(w1.name, prompts, w1.max_new_tokens)


def pipeline_w1(path, engine_kwargs, requests, tiny):
    """bench_llama's W1 (ours.start, a first call timed apart, the whole batch at once)."""
    w1 = w1_workload(requests, tiny)
    pipe, startup_s = ours.start(path, engine_kwargs)
    call = ours.caller(pipe)
    first_s = call([p[:16] for p in w1.prompts[:2]], 4)[0]
    return dict(throughput(call, w1), startup_s=startup_s, first_call_s=first_s)
