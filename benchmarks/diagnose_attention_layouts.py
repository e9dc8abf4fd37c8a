"""Which (key width, value width, value-in-key, launch config, prefill/decode) cases of the Triton paged
attention disagree with the PyTorch reference on this GPU: each case in a process of its own, so that one
illegal memory access does not take the others with it. Written for the 24-feature key over 16-feature
values (the tiny DeepSeek-V2's latent cache: 16 + 8) that the H200 run of 2026-12-02 got wrong in bf16 with
64-key tiles and right with 16-key ones (benchmarks/RESULTS.md). From the repository root, after
gpu_setup.sh:

    python3 benchmarks/diagnose_attention_layouts.py > $OUT/layouts.log

Configs "vpad" pad value tiles to the key's width (the TTGIR lead). One line per case: ``dtype layout seqs config max|err|`` (or the error's first line).
"""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

LAYOUTS = {"in-key-24-16": (4, 1, 24, 16, True), "beside-24-16": (4, 1, 24, 16, False),
           "beside-24-24": (4, 1, 24, 24, False), "in-key-32-16": (4, 1, 32, 16, True),
           "in-key-48-32": (4, 1, 48, 32, True), "beside-24-32": (4, 1, 24, 32, False),
           "beside-32-16": (4, 1, 32, 16, False), "in-key-72-64": (4, 1, 72, 64, True)}
SEQS = {"prefill": [(0, 40), (70, 30)], "decode": [(300, 1), (1000, 1)]}
CONFIGS = {"default": {}, "n16": dict(prefill_block_n=16, decode_block_n=16), "n32": dict(prefill_block_n=32,
           decode_block_n=32), "w4": dict(prefill_warps=4, decode_warps=4), "stages1": dict(prefill_stages=1,
           decode_stages=1), "vpad": {"value_pad_to_key": True},
           "vpad-w4": {"value_pad_to_key": True, "prefill_warps": 4, "decode_warps": 4}}
DTYPES = ("bfloat16", "float16")  # float32 (no tensor cores) was right throughout


def one_case(dtype: str, layout: list, seqs: list, config: dict) -> str:
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("vhs", "tests/kernels/test_value_head_size.py")
    vhs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vhs)
    from mii_core.model.ops import AttentionParams
    from mii_kernels.triton.attention import TritonAttention

    if config.pop("value_pad_to_key", False):  # the TTGIR lead: value tiles as wide as the key's
        _pad_value_tiles_to_key()
    q, keys, values, batch, _ = vhs.make_case(tuple(layout), [tuple(s) for s in seqs], seed=3,
                                              dtype=getattr(torch, dtype))
    params = AttentionParams(layout[2] ** -0.5)
    got = TritonAttention(config)(q, keys, values, batch, params).float()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    want = vhs.reference(q.float(), keys.float(), values.float(), batch, params)
    return f"{(got - want).abs().max().item():.3g}"


def _pad_value_tiles_to_key() -> None:
    from mii_kernels.triton import attention

    common_args = attention._common_args

    def padded(*args, **kwargs):
        tensors, strides, meta = common_args(*args, **kwargs)
        return tensors, strides, {**meta, "DV_PAD": max(meta["DV_PAD"], meta["D_PAD"])}

    attention._common_args = padded


def main() -> None:
    if len(sys.argv) > 1:  # a child: one case, its arguments as JSON
        print(one_case(*json.loads(sys.argv[1])))
        return
    cases = list(itertools.product(DTYPES, LAYOUTS.items(), SEQS.items(), CONFIGS.items()))
    with ThreadPoolExecutor(14) as pool:  # fourteen processes share the GPU (16 cores); compiling is most of it
        for line in pool.map(run_case, cases):
            print(line, flush=True)


def run_case(case) -> str:
    dtype, (ln, layout), (sn, seqs), (cn, config) = case
    try:
        child = subprocess.run([sys.executable, __file__, json.dumps([dtype, layout, seqs, config])],
                               capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return f"{dtype} {ln} {sn} {cn} TIMEOUT"
    lines = (child.stdout.strip() or child.stderr.strip() or "no output").splitlines()
    outcome = lines[-1] if child.returncode == 0 else "ERROR " + next(
        (line for line in reversed(lines) if "Error" in line), lines[-1])[:120]
    return f"{dtype} {ln} {sn} {cn} {outcome}"


if __name__ == "__main__":
    main()
