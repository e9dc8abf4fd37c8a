"""The steps that need the model in the benchmark's own hands (run in a child process): the random checkpoint,
and W1 through the pipeline (the figure the servers' W1 is held against, measured in the same run)."""

import checkpoint
import ours
import workloads
from phases import throughput


def first_special(tiny):
    return checkpoint.first_special_id(checkpoint.TINY if tiny else checkpoint.LLAMA3_8B)


def w1_workload(requests, tiny):
    return workloads.make_w1(requests, first_special(tiny), tiny)


def pipeline_w1(path, engine_kwargs, requests, tiny):
    """bench_llama's W1 (ours.start, a first call timed apart, the whole batch at once)."""
    w1 = w1_workload(requests, tiny)
    pipe, startup_s = ours.start(path, engine_kwargs)
    call = ours.caller(pipe)
    first_s = call([p[:16] for p in w1.prompts[:2]], 4)[0]
    return dict(throughput(call, w1), startup_s=startup_s, first_call_s=first_s)
