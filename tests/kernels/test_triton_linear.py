"""The Triton GEMV (``mii_kernels.triton.linear``) against its PyTorch reference (``torch.nn.functional.linear``).

Without CUDA the kernel runs under the Triton interpreter at small shapes whose K and N are not
multiples of the tiles (and some that are), in float32 and float16; with CUDA the same cases run
compiled, plus bfloat16 at the Llama-3-8B projections (hidden 4096, qkv 6144, gate|up 28672, down from
14336, vocabulary 128256). Each token count 1..8 runs the GEMV; 13 takes the cuBLAS path.
"""
from __future__ import annotations

import pytest
import torch

from mii_kernels.torch_ref.linear import linear as reference

pytest.importorskip("triton", reason="triton comes with mii-kernels on Linux only")
from mii_kernels.triton import linear as triton_linear  # noqa: E402
from test_triton_ops import CUDA, assert_matches, cases, randn  # noqa: E402

TOKENS = [*range(1, triton_linear.GEMV_MAX_TOKENS + 1), 13]
SMALL = [(300, 70), (1024, 48), (40, 5)]  # (K, N): ragged K and N, whole tiles, both smaller than a tile
REAL = [(4096, 6144), (4096, 4096), (4096, 28672), (14336, 4096), (4096, 128256)]


def projection(tokens, features_in, features_out, dtype, with_bias, seed=0):
    """x as a strided view of a wider tensor (a slice of a fused output); weights scaled so y ~ 1."""
    x = randn(tokens, features_in + 24, dtype=dtype, seed=seed)[:, 8:8 + features_in]
    weight = randn(features_out, features_in, dtype=dtype, scale=features_in ** -0.5, seed=seed + 1)
    bias = randn(features_out, dtype=dtype, seed=seed + 2) if with_bias else None
    return x, weight, bias


@pytest.mark.parametrize("with_bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("features_in, features_out, dtype", cases(SMALL, REAL))
def test_linear_matches_reference(tokens, features_in, features_out, dtype, with_bias):
    x, weight, bias = projection(tokens, features_in, features_out, dtype, with_bias)
    assert x.stride(0) != features_in  # really strided
    ours, theirs = triton_linear.linear(x, weight, bias), reference(x, weight, bias)
    if dtype == torch.bfloat16:
        # bf16 over K up to 14336: summation order alone changes many last bits, so hold the kernel to
        # cuBLAS's own error against exact float32 arithmetic instead of to cuBLAS's bits
        exact = reference(x.float(), weight.float(), None if bias is None else bias.float())
        assert (ours.float() - exact).abs().max() <= 1.5 * (theirs.float() - exact).abs().max() + 1e-3
        return
    assert_matches(ours, theirs)


@pytest.mark.parametrize("config", sorted(triton_linear.CONFIGS))
@pytest.mark.parametrize("tokens", [1, 2, 3, 8])
@pytest.mark.parametrize("features_in, features_out, dtype", cases([(300, 70)], [(4096, 6144)]))
def test_every_config_matches_reference(config, tokens, features_in, features_out, dtype):
    x, weight, bias = projection(tokens, features_in, features_out, dtype, with_bias=True, seed=5)
    got = triton_linear.TritonLinear(config)(x, weight, bias)
    assert_matches(got, reference(x, weight, bias))


@pytest.mark.parametrize("tokens, gemv", [(1, True), (triton_linear.GEMV_MAX_TOKENS, True),
                                          (triton_linear.GEMV_MAX_TOKENS + 1, False)])
def test_few_tokens_run_the_gemv_and_more_run_cublas(monkeypatch, tokens, gemv):
    launched = []

    class Spy:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: launched.append(grid)

    monkeypatch.setattr(triton_linear, "_gemv_kernel", Spy())
    x, weight, bias = projection(tokens, 64, 32, torch.float32, with_bias=True)
    out = triton_linear.linear(x, weight, bias)
    assert bool(launched) == gemv
    if not gemv:
        assert_matches(out, reference(x, weight, bias))


def test_leading_dimensions_are_kept():
    x, weight, bias = projection(6, 96, 40, torch.float32, with_bias=True)
    x3 = x.reshape(2, 3, 96)
    got = triton_linear.linear(x3, weight, bias)
    assert got.shape == (2, 3, 40)
    assert_matches(got, reference(x3, weight, bias))


def test_mismatched_shapes_are_refused():
    x, weight, _ = projection(2, 64, 32, torch.float32, with_bias=False)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        triton_linear.linear(x[:, :48], weight)


@pytest.mark.parametrize("config, message", [("nope", "unknown linear config"),
                                             ({3: triton_linear.CONFIGS["default"][2]}, "powers of two"),
                                             ({4: dict(mode="warp", block_n=16, block_k=64, warps=4, stages=1)},
                                              "mode one of")])
def test_bad_configs_are_refused(config, message):
    with pytest.raises(ValueError, match=message):
        triton_linear.TritonLinear(config)


@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("tokens", [1, 4, 8])
def test_replays_in_a_cuda_graph(tokens):
    x, weight, bias = projection(tokens, 4096, 6144, torch.bfloat16, with_bias=True)
    static_x = x.clone()
    triton_linear.linear(static_x, weight, bias)  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = triton_linear.linear(static_x, weight, bias)
    fresh = randn(tokens, 4096, dtype=torch.bfloat16, seed=9)
    static_x.copy_(fresh)
    graph.replay()
    assert_matches(out, reference(fresh, weight, bias))


def test_tiles_are_read_from_the_environment_when_the_op_is_made(monkeypatch):
    monkeypatch.setenv("MII_TRITON_LINEAR_CONFIG", "gemv")
    assert triton_linear.TritonLinear().tiles == triton_linear.CONFIGS["gemv"]
    monkeypatch.delenv("MII_TRITON_LINEAR_CONFIG")
    assert triton_linear.TritonLinear().tiles == triton_linear.CONFIGS["default"]
