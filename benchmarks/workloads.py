"""Workload inputs (W1, W2, W3 of shared/brief/performance.md) and the two device ceilings."""

import random
import statistics
from dataclasses import dataclass

import torch


@dataclass
class Workload:
    name: str
    prompts: list  # list[list[int]]
    max_new_tokens: list  # list[int], one per prompt

    @property
    def prompt_tokens(self):
        return sum(len(p) for p in self.prompts)

    @property
    def output_tokens(self):
        return sum(self.max_new_tokens)

    def head(self, k):
        return Workload(self.name, self.prompts[:k], self.max_new_tokens[:k])


def _ids(rng, n, first_special):
    return [rng.randrange(first_special) for _ in range(n)]


def make_w1(n, first_special, tiny=False, seed=1234):
    """W1 offline throughput: prompt and output lengths uniform in [100, 1024] (tiny: [4, 24] / [2, 12])."""
    rng = random.Random(seed)
    p_lo, p_hi, o_lo, o_hi = (4, 24, 2, 12) if tiny else (100, 1024, 100, 1024)
    lens = [(rng.randint(p_lo, p_hi), rng.randint(o_lo, o_hi)) for _ in range(n)]
    return Workload("W1", [_ids(rng, p, first_special) for p, _ in lens], [o for _, o in lens])


def make_w2(first_special, tiny=False, seed=2345):
    """W2 decode latency: batch 1, prompt 128, 128 new tokens (tiny: 8 and 8)."""
    rng = random.Random(seed)
    n = 8 if tiny else 128
    return Workload("W2", [_ids(rng, n, first_special)], [n])


def make_w3(first_special, tiny=False, seed=3456):
    """W3 prefill: 64 prompts of 1024 tokens, 1 new token each (tiny: 4 of 16)."""
    rng = random.Random(seed)
    count, n = (4, 16) if tiny else (64, 1024)
    return Workload("W3", [_ids(rng, n, first_special) for _ in range(count)], [1] * count)


def _median_event_ms(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure_ceilings(copy_bytes=4_000_000_000, mm=8192):
    """Device-to-device copy bandwidth (bytes read + written) and bf16 matmul rate: medians of CUDA-event
    timings on random data."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    n = copy_bytes // 2
    src = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    copy_ms = _median_event_ms(lambda: dst.copy_(src), warmup=3, reps=10)
    del src, dst
    a = torch.randn(mm, mm, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(mm, mm, device="cuda", dtype=torch.bfloat16)
    mm_ms = _median_event_ms(lambda: torch.mm(a, b), warmup=5, reps=20)
    del a, b
    torch.cuda.empty_cache()
    return {
        "copy_bytes_moved": 2 * n * 2,
        "copy_ms": copy_ms,
        "bandwidth_Bps": 2 * n * 2 / (copy_ms / 1e3),
        "matmul_shape": [mm, mm, mm],
        "matmul_ms": mm_ms,
        "matmul_flops": 2 * mm**3 / (mm_ms / 1e3),
    }


def floors(ceil, ckpt, w1=None, w3=None):
    """Lower bounds from the ceilings: W2 ms/token, compute-bound tokens/s, and per-workload forms of it."""
    if "bandwidth_Bps" not in ceil:
        return {}
    flop_per_token = 2 * ckpt["params_total"]
    out = {
        "w2_ms_per_token": ckpt["weight_bytes"] / ceil["bandwidth_Bps"] * 1e3,
        "compute_tokens_per_s": ceil["matmul_flops"] / flop_per_token,
    }
    if w1 is not None:  # every prompt and output token passes the weights once
        t = (w1.prompt_tokens + w1.output_tokens) * flop_per_token / ceil["matmul_flops"]
        out["w1_output_tokens_per_s"] = w1.output_tokens / t
    if w3 is not None:
        out["w3_prompt_tokens_per_s"] = out["compute_tokens_per_s"]
    return out
