"""One rank of a multi-GPU benchmark engine (multi_gpu_sections.py starts it): alone for tensor_parallel=1,
or under the launcher (deepspeed, else torchrun) as each of N ranks, exactly as a user's script runs:

    python3 benchmarks/multi_gpu_rank.py SPEC.json                    # TP=1, CUDA_VISIBLE_DEVICES=0
    torchrun --nproc_per_node 2 benchmarks/multi_gpu_rank.py SPEC.json

SPEC: {"path", "engine_kwargs", "jobs": [{"key", "kind": tokens|latency|throughput, "prompts",
"max_new_tokens", "repeats"}], "part", "t0", "deadline"}. Every rank builds the pipeline and makes the same
calls (tensor parallelism needs that); rank 0 times them and writes its results to SPEC["part"] after each
job (phases.Phases), so a run stopped at its deadline keeps what it measured. Whether a job still fits the
time is rank 0's decision, shared with the others, so that no rank starts a call the others skip.
"""

import json
import os
import sys

for _var, _value in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"),
                     ("NVSHMEM_DISABLE_NVLS", "1")):
    os.environ[_var] = _value  # issue 11: NVLink multicast stays off in every process
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ours  # noqa: E402
from phases import Phases, latency, throughput  # noqa: E402
from workloads import Workload  # noqa: E402

RANK = int(os.environ.get("RANK", "0"))


class RankPhases(Phases):
    def log(self, msg):
        super().log(f"rank {RANK}: {msg}")


def environment(pipe):
    """The devices and libraries this rank set ran on (rank 0's view)."""
    import torch
    info = {"world_size": pipe.ctx.world_size, "torch": torch.__version__,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if torch.cuda.is_available():
        nccl = torch.cuda.nccl.version()  # a tuple in recent torch, an int in older ones
        info["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
        info["device"] = torch.cuda.get_device_name()
    return info


def run_job(call, job):
    prompts, max_new = job["prompts"], job["max_new_tokens"]
    if job["kind"] == "latency":
        return latency(call, prompts[0], max_new[0], job["repeats"])
    if job["kind"] == "throughput":
        return throughput(call, Workload(job["key"], prompts, max_new))
    return {"token_ids": call(prompts, max_new, tokens=True)}


def tokens_caller(pipe):
    """ours.caller, plus a way to get the generated ids (parity jobs)."""
    timed = ours.caller(pipe)

    def call(prompts, max_new, tokens=False):
        if not tokens:
            return timed(prompts, max_new)
        res = pipe.generate_tokens(prompts, max_new_tokens=max_new, ignore_eos=True, do_sample=False)
        return [list(r.token_ids) for r in res]
    return call


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    from mii_core.distributed.step_sync import share_from_rank0
    part = spec["part"] if RANK == 0 else f"{spec['part']}.rank{RANK}"
    ph = RankPhases(part, spec["t0"], spec["deadline"])
    started = ph.phase("load", ours.start, spec["path"], spec["engine_kwargs"], {"all_rank_output": True})
    if started is None:
        return 1
    pipe, startup_s = started
    ph.record("startup", {"startup_s": startup_s, **ours.facts(pipe)})
    ph.phase("environment", environment, pipe)
    call = tokens_caller(pipe)
    warm = spec["jobs"][0]["prompts"][0][:16]
    ph.phase("first_call", lambda: {"seconds": call([warm, warm[:8]], [8, 4])[0]})
    for job in spec["jobs"]:
        left = share_from_rank0(pipe.ctx, ph.left())  # rank 0 decides for all
        if left < job.get("min_s", 5):
            ph.log(f"SKIP {job['key']}: {max(left, 0):.0f}s left")
            ph.part["skipped"].append(job["key"])
            continue
        ph.phase(job["key"], run_job, call, job)
    ph.save()
    pipe.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
