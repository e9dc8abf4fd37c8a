"""The compiled code of the FP8 paths keeps what the 2026-12-03 session bought (benchmarks/sass_census.py,
sm_90 SASS compiled here): no per-element float16 → bfloat16 conversion (``F2F.BF16.F16``, a quarter-rate
instruction that bounded the FP8 KV attention on the H200) in the attention or the quantized kernels, and
the FP8 cache's V tile read from shared memory by ``ldmatrix``, not a byte per load (``LDS.U8``)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="compiles for sm_90 without a GPU; the GPU run times these")
def test_fp8_kernels_compile_without_per_element_bf16_conversions_or_byte_loads():
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sass_census.py"), "--scenarios",
                          "attention,quant"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    reports = [line for line in run.stdout.splitlines() if line.startswith("_") or line.startswith("    ")]
    kernels = list(zip(reports[::2], reports[1::2]))  # (name and counts, the opcodes in full)
    fp8_attention = [detail for name, detail in kernels if name.startswith("_decode_kernel") and "'FP8_KV': True" in name]
    bf16_attention = [detail for name, detail in kernels if name.startswith("_decode_kernel") and "'FP8_KV': False" in name]
    quantized = [(name, detail) for name, detail in kernels if "'FORMAT': 2" in name or "'FORMAT': 3" in name]
    assert fp8_attention and bf16_attention and len(quantized) >= 4, run.stdout
    # the census sees what it should: bf16 products on bf16, float16 ones with unpacked codes on FP8
    assert "HMMA.16816.F32.BF16" in bf16_attention[0] and "LDSM.16.MT88.4" in bf16_attention[0]
    assert "F2FP.F16.E4M3.UNPACK_B" in fp8_attention[0] and "LDSM.16.MT88.4" in fp8_attention[0]
    for detail in fp8_attention + [detail for _, detail in quantized]:
        assert "F2F.BF16.F16" not in detail, detail
    assert "LDS.U8" not in fp8_attention[0], fp8_attention[0]
