"""benchmarks/kernel_bench_attention.py's shapes (the GPU run times them; here their set-up is checked on the
CPU): each model's heads, head size, soft-cap and scale reach the attention op, and the K/V bytes a decode
row's bandwidth is worked out from are the tokens' own."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import kernel_bench_attention as bench  # noqa: E402
from mii_kernels.torch_ref.attention import paged_attention as reference  # noqa: E402


@pytest.mark.parametrize("name, heads, kv_heads, head_dim, softcap, scale", [
    ("llama", 32, 8, 128, None, 128 ** -0.5),
    ("gemma2", 16, 8, 256, 50.0, 1 / 16),  # Gemma-2-9B: query_pre_attn_scalar 256
    ("qwen3_moe", 32, 4, 128, None, 128 ** -0.5),
])
def test_each_shape_reaches_the_op(name, heads, kv_heads, head_dim, softcap, scale):
    two_decodes = bench.Workload("two decodes", [(40, 1), (70, 1)])
    setup = bench.Setup(two_decodes, 16, torch.device("cpu"), bench.SHAPES[name])
    assert setup.call(reference, 0).shape == (2, heads, head_dim)
    assert setup.params.logit_softcap == softcap and setup.params.scale == pytest.approx(scale)
    # 41 + 71 cached tokens, K and V, two bytes each
    assert setup.kv_bytes == (41 + 71) * kv_heads * head_dim * 2 * 2


def test_an_fp8_cache_reaches_the_op_with_its_scales_and_counts_one_byte_an_element():
    """--kv-dtype fp8: the engine's FP8 cache (e4m3 codes, a scale per KV head); the answer is the reference's
    on the bf16 cache rounded to e4m3 (scales of 1), and the bandwidth counts the bytes an FP8 cache holds."""
    two_decodes = bench.Workload("two decodes", [(40, 1), (70, 1)])
    torch.manual_seed(3)
    setup = bench.Setup(two_decodes, 16, torch.device("cpu"), bench.SHAPES["llama"], fp8_kv=True)
    assert setup.cache.dtype == torch.float8_e4m3fn and setup.params.kv_scales.tolist() == [[1.0] * 8] * 2
    assert setup.kv_bytes == (41 + 71) * 8 * 128 * 2 * 1
    got = setup.call(reference, 0)
    as_bf16 = setup.cache[0].to(torch.bfloat16)
    want = reference(setup.q, as_bf16[0], as_bf16[1], setup.batch, bench.SHAPES["llama"].params())
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)
