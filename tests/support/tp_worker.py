"""One rank of a tensor-parallel test run, launched by torchrun (or deepspeed, or by hand with RANK etc. set).

    torchrun --nproc_per_node 2 tests/support/tp_worker.py JOBS.json OUT_DIR

JOBS.json: a list of {"name", "path", "options" (model options), "token_lists", "max_new_tokens",
"all_rank_output"}. Each rank runs every job greedily and writes OUT_DIR/rank<r>.json: per job the
generated ids it returned (None when the pipeline returned nothing), its scheduler's preemptions, the
bytes of its model's parameters, its KV heads, and what share_from_rank0 gave it. ``MII_TEST_DIE_AT_STEP=k`` with ``MII_TEST_DIE_RANK=r`` kills rank r
(SIGKILL, or ``MII_TEST_DIE_SIGNAL=SIGSTOP`` to stall it) at its k-th forward pass, to test that the others
end with a clear error.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def arm_death(pipe) -> None:
    die_rank, die_step = os.environ.get("MII_TEST_DIE_RANK"), os.environ.get("MII_TEST_DIE_AT_STEP")
    if die_rank is None or int(die_rank) != pipe.ctx.rank:
        return
    runner, steps = pipe.engine.runner, [0]
    real_run = runner.run

    def run(*args, **kwargs):
        steps[0] += 1
        if steps[0] >= int(die_step):
            os.kill(os.getpid(), getattr(signal, os.environ.get("MII_TEST_DIE_SIGNAL", "SIGKILL")))
        return real_run(*args, **kwargs)

    runner.run = run


def run_job(job: dict) -> dict:
    import mii_core

    from mii_core.distributed.step_sync import share_from_rank0

    pipe = mii_core.pipeline(job["path"], all_rank_output=job.get("all_rank_output", False), **job["options"])
    shared = share_from_rank0(pipe.ctx, {"job": job["name"]} if pipe.ctx.rank == 0 else None)
    arm_death(pipe)
    outputs = pipe.generate_tokens(job["token_lists"], max_new_tokens=job["max_new_tokens"], do_sample=False,
                                   ignore_eos=True)
    result = {"generated": [list(o.token_ids) for o in outputs] if outputs else None,
              "preemptions": pipe.loop.scheduler.num_preemptions,
              "param_bytes": sum(p.numel() * p.element_size() for p in pipe.engine.model.parameters()),
              "kv_heads": pipe.engine.kv_cache.shape.num_kv_heads, "shared": shared}
    pipe.destroy()
    return result


def main(jobs_file: str, out_dir: str) -> None:
    jobs = json.loads(Path(jobs_file).read_text())
    results = {job["name"]: run_job(job) for job in jobs}
    rank = int(os.environ.get("RANK", "0"))
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:3])
