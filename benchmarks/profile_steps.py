"""Where one engine step spends GPU time: top kernels for a prefill step and decode steps.

    python3 benchmarks/profile_steps.py [--tiny]

Runs on the Llama-3-8B-shaped random checkpoint of bench_llama.py (built if missing) and prints,
per scenario, the wall time of one step and the kernels with the most GPU time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkpoint import build_checkpoint  # noqa: E402

import mii_core  # noqa: E402


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_put(engine, uids, token_lists) -> float:
    sync()
    start = time.perf_counter()
    engine.put(uids, token_lists)
    sync()
    return time.perf_counter() - start


def scenario(engine, name: str, prefill: list[list[int]], step: list[list[int]], uid0: int) -> None:
    """Caches ``prefill`` (context), then profiles one put of ``step`` on the same uids."""
    uids = list(range(uid0, uid0 + len(step)))
    for start in range(0, len(uids), 16):  # build the context in chunks the engine accepts
        for chunk_start in range(0, len(prefill[0]), 512):
            engine.put(uids[start:start + 16], [p[chunk_start:chunk_start + 512] for p in prefill[start:start + 16]])
    timed_put(engine, uids, step)  # warm-up at this shape
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        seconds = timed_put(engine, uids, step)
    print(f"\n=== {name}: {len(uids)} sequences, {sum(map(len, step))} new tokens, "
          f"context {len(prefill[0])}: one step {seconds * 1e3:.1f} ms", flush=True)
    sort_key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    print(prof.key_averages().table(sort_by=sort_key, row_limit=14, max_name_column_width=60), flush=True)
    for uid in uids:
        engine.flush(uid)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--ckpt", default="/tmp/llama3-8b-random")
    args = parser.parse_args()
    path = args.ckpt if not args.tiny else "/tmp/llama-tiny-profile"
    build_checkpoint(path, tiny=args.tiny)
    pipe = mii_core.pipeline(path, inference_engine_config={"state_manager": {"max_ragged_batch_size": 4096,
        "memory_config": {"mode": "fraction", "size": 0.8}}})
    engine = pipe.engine
    gen = torch.Generator().manual_seed(0)

    def ids(n: int, length: int) -> list[list[int]]:
        return torch.randint(10, min(1000, engine.model.spec.vocab_size), (n, length), generator=gen).tolist()

    scenario(engine, "decode batch 1", ids(1, 128), ids(1, 1), 0)
    scenario(engine, "decode batch 256", ids(256, 64 if args.tiny else 1000), ids(256, 1), 1000)
    scenario(engine, "prefill 768-token chunk", ids(1, 256), ids(1, 768), 5000)


if __name__ == "__main__":
    main()
