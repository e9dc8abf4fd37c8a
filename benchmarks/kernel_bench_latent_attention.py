"""What a cache of the latent costs and saves in the Triton paged attention, on CUDA (bf16).

    python3 benchmarks/kernel_bench_latent_attention.py

DeepSeek-V2's attention two ways: over the latent cache (one KV head, a 576-feature key, the value its first
512 features: ``value_in_key``), with 16 query heads (DeepSeek-V2-Lite, or V2 over 8 ranks) and 128 (V2 on
one GPU), against the up-projected layout (16 KV heads, 192-feature keys, 128-feature values beside them).
Prints the time of one call, the cache bytes it reads, and the bytes one token takes in the cache.
"""
from __future__ import annotations

import time

import torch

from mii_core.batch import build_ragged_batch
from mii_core.kv_cache import KVCache, KVCacheShape
from mii_core.model.ops import AttentionParams
from mii_kernels.triton.attention import TritonAttention

BLOCK = 64
LAYOUTS = {  # name: (query heads, KV heads, key features, value features, value in key)
    "latent, 16 heads": (16, 1, 576, 512, True),
    "latent, 128 heads": (128, 1, 576, 512, True),
    "up-projected, 16 heads": (16, 16, 192, 128, False),
}
WORKLOADS = {"decode 64 x 4096": (64, 4096, 1), "prefill 4 x 2048": (4, 2048, 2048)}


def time_call(layout, seqs: int, context: int, new: int, device: torch.device) -> tuple[float, int, int]:
    heads, kv_heads, key_dim, value_dim, in_key = layout
    per_seq = -(-context // BLOCK)
    shape = KVCacheShape(1, kv_heads, key_dim, BLOCK, torch.bfloat16, value_head_dim=value_dim,
                         value_in_key=in_key)
    cache = KVCache(shape, seqs * per_seq, device)
    cache.data.normal_()
    keys, values = cache.layer(0)
    tables = [list(range(i * per_seq, (i + 1) * per_seq)) for i in range(seqs)]
    batch = build_ragged_batch([[0] * new] * seqs, [context - new] * seqs, tables, BLOCK, device)
    q = torch.randn(seqs * new, heads, key_dim, device=device, dtype=torch.bfloat16)
    attend, params = TritonAttention(), AttentionParams(key_dim ** -0.5)
    for _ in range(3):
        attend(q, keys, values, batch, params)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        attend(q, keys, values, batch, params)
    torch.cuda.synchronize()
    read = seqs * context * shape.bytes_per_token
    return (time.perf_counter() - start) * 100, read, shape.bytes_per_token


def main() -> None:
    device = torch.device("cuda")
    for workload, (seqs, context, new) in WORKLOADS.items():
        for name, layout in LAYOUTS.items():
            ms, read, per_token = time_call(layout, seqs, context, new, device)
            print(f"{workload:18s} {name:24s} {ms:8.3f} ms  reads {read / 1e9:6.3f} GB "
                  f"({read / 1e6 / ms:6.0f} GB/s)  {per_token:5d} bytes a token and layer")


if __name__ == "__main__":
    main()
