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
