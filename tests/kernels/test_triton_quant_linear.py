"""The Triton quantized linear (``mii_kernels.triton.quant_linear``) against the PyTorch reference
(``mii_kernels.torch_ref.quant_linear``), and its in-register decoding against the format tables.

Without CUDA the weight-only kernel runs under the Triton interpreter at small shapes (float32 and
float16; the interpreter's bfloat16 is unusable, see test_triton_ops.cases); the FP8 tensor-core path
(``torch._scaled_mm``) needs an sm_89+ GPU and is skipped elsewhere. With CUDA, bfloat16 cases at the
Llama-3-8B projections are added (benchmarks/gpu_checks.sh runs them).
"""
from __future__ import annotations

import pytest
import torch

from mii_core.model import quant_formats as fmt
from mii_core.model.quantization import QuantizedWeight, quantize_weight
from mii_kernels.torch_ref.quant_linear import quant_linear as reference

pytest.importorskip("triton", reason="triton comes with mii-kernels on Linux only")
from mii_kernels.triton import quant_decode, quant_gemv, quant_linear as triton_quant  # noqa: E402
from test_triton_ops import CUDA, DEVICE, assert_matches, cases, randn  # noqa: E402

MODES = ("fp8", "wf8af16", "wf6af16")
SMALL = [(70, 24), (300, 40), (5, 3)]  # (K, N): ragged K (FP6 rows end mid-block) and N
REAL = [(4096, 6144), (4096, 28672), (14336, 4096)]
FP8_GEMM = CUDA and torch.cuda.get_device_capability() >= triton_quant.FP8_GEMM_CAPABILITY
# float32 GEMM-path tolerance: exact arithmetic on the CPU; Hopper's FP8 tensor cores accumulate with about
# 14 mantissa bits (DeepSeek-V3's report, section 3.3.2), ~1e-4 of a unit-sized output at K = 64
FP8_PATH_TOL = dict(rtol=2e-3, atol=2e-3) if CUDA else dict(rtol=1e-5, atol=1e-5)


def _projection(tokens, k, n, dtype, mode, seed=0):
    x = randn(tokens, k + 8, dtype=dtype, seed=seed)[:, 4:4 + k]  # a strided view, as a fused output's slice
    weight = quantize_weight(randn(n, k, scale=k ** -0.5, seed=seed + 1), mode)
    return x, weight, randn(n, dtype=dtype, seed=seed + 2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tokens", [1, 3, 8, 20])
@pytest.mark.parametrize("k, n, dtype", cases(SMALL, REAL))
def test_weight_only_matches_reference(mode, tokens, k, n, dtype):
    x, weight, bias = _projection(tokens, k, n, dtype, mode)
    if mode == "fp8" and tokens > 8:  # the reference quantizes x here; the weight-only kernel does not
        weight = QuantizedWeight(weight.data, weight.scale, "wf8af16", weight.in_features)
    assert_matches(triton_quant.weight_only_linear(x, weight, bias), reference(x, weight, bias))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tokens", [1, 2, 8])
@pytest.mark.parametrize("k, n, dtype", cases(SMALL, REAL))
def test_gemv_matches_reference(mode, tokens, k, n, dtype, e4m3_decoding):
    """The op as the engine calls it: a step of at most 8 tokens takes the GEMV (its default tiles), FP8 and
    FP6 (bit planes) alike."""
    x, weight, bias = _projection(tokens, k, n, dtype, mode)
    assert quant_gemv.gemv_applies(tokens, weight)
    assert_matches(triton_quant.TritonQuantLinear()(x, weight, bias), reference(x, weight, bias))


@pytest.mark.parametrize("config", sorted(quant_gemv.CONFIGS))
@pytest.mark.parametrize("tokens", [1, 3])
@pytest.mark.parametrize("mode", ["wf8af16", "wf6af16"])
def test_every_gemv_config_matches_reference(config, tokens, mode):
    """Every named tile set (benchmarks/kernel_bench_quant.py compares them), each mode (lanes, reduce, dot)
    it holds, at a ragged K (FP6 rows end mid-block: zero codes pad them to 320)."""
    x, weight, bias = _projection(tokens, 300, 40, torch.float32, mode)
    actual = quant_gemv.quant_gemv(x, weight, bias, quant_gemv.launch_config(config))
    assert_matches(actual, reference(x, weight, bias))


@pytest.mark.parametrize("config", sorted(quant_gemv.CONFIGS))
@pytest.mark.parametrize("tokens", [1, 3])
def test_fp6_gemv_over_whole_blocks_matches_reference(config, tokens):
    """K a multiple of every tile's chunk: the GEMV's unmasked FP6 path (EVEN_K), no padding codes."""
    x, weight, bias = _projection(tokens, 4096, 16, torch.float32, "wf6af16")
    actual = quant_gemv.quant_gemv(x, weight, bias, quant_gemv.launch_config(config))
    assert_matches(actual, reference(x, weight, bias))


def test_fp6_gemv_defaults_to_its_own_tiles(monkeypatch):
    """Unset, FP6's variable means its own tiles ("fp6"), and a partial setting merges over them, not FP8's."""
    monkeypatch.delenv(quant_gemv.FP6_CONFIG_ENV, raising=False)
    monkeypatch.delenv(quant_gemv.CONFIG_ENV, raising=False)
    op = triton_quant.TritonQuantLinear()
    assert op.fp6_gemv_tiles == quant_gemv.CONFIGS["fp6"] != quant_gemv.CONFIGS["default"] == op.gemv_tiles
    tile = dict(mode="lanes", block_n=4, block_k=4096, warps=4, stages=1)
    merged = quant_gemv.launch_config({1: tile}, quant_gemv.FP6_CONFIG_ENV)
    assert merged == {**quant_gemv.CONFIGS["fp6"], 1: tile}


def test_fp6_gemv_picks_its_own_tiles(monkeypatch):
    monkeypatch.setenv(quant_gemv.FP6_CONFIG_ENV, "k4096")
    op = triton_quant.TritonQuantLinear()
    assert op.fp6_gemv_tiles == quant_gemv.CONFIGS["k4096"] and op.gemv_tiles == quant_gemv.CONFIGS["default"]
    x, weight, bias = _projection(1, 300, 8, torch.float32, "wf6af16")
    assert_matches(op(x, weight, bias), reference(x, weight, bias))


def test_fp6_gemv_tile_must_read_whole_blocks():
    x, weight, _ = _projection(1, 300, 8, torch.float32, "wf6af16")
    with pytest.raises(ValueError, match="whole blocks of 64 codes; block_k 96"):
        quant_gemv.quant_gemv(x, weight, None, {1: dict(mode="lanes", block_n=8, block_k=96, warps=4, stages=1)})


@pytest.mark.parametrize("mode", ["wf8af16", "wf6af16"])
@pytest.mark.parametrize("tokens", [1, 3, 20])
def test_tensor_parallel_shards_match_reference(mode, tokens):
    """As the engine shards a weight [N, K] over two ranks: a row-parallel rank quantizes (for FP6: packs,
    padded to its own 64-code blocks) its own K / 2 columns, 70 here, and the partial sums add up; a
    column-parallel rank's rows, and so a slice of a quantized weight's rows, is a view that the kernels read
    with its row stride."""
    x, weight, bias = _projection(tokens, 140, 24, torch.float32, mode)
    full = randn(24, 140, scale=140 ** -0.5, seed=1)
    shards = [quantize_weight(part.contiguous(), mode) for part in full.chunk(2, dim=1)]
    op = triton_quant.TritonQuantLinear()
    partials = [op(x[:, 70 * rank:70 * (rank + 1)], shard) for rank, shard in enumerate(shards)]
    wanted = [reference(x[:, 70 * rank:70 * (rank + 1)], shard) for rank, shard in enumerate(shards)]
    assert_matches(partials[0] + partials[1], wanted[0] + wanted[1])
    rows = QuantizedWeight(weight.data[8:16], weight.scale[8:16], mode, weight.in_features)
    assert_matches(op(x, rows, bias[8:16]), reference(x, weight, bias)[:, 8:16])


def test_gemv_config_errors_name_the_keys():
    with pytest.raises(ValueError, match="unknown quantized GEMV config 'fast'"):
        quant_gemv.launch_config("fast")
    with pytest.raises(ValueError, match="powers of two"):
        quant_gemv.launch_config({3: dict(mode="lanes", block_n=8, block_k=64, warps=4, stages=1)})
    with pytest.raises(ValueError, match="exactly the keys"):
        quant_gemv.launch_config({1: dict(mode="lanes", block_n=8)})


@pytest.fixture(params=["native", "bits"])
def e4m3_decoding(request, monkeypatch):
    """Both ways of decoding e4m3: the hardware conversion (sm_89+, and the interpreter) and the bit
    placement older GPUs run (forced here by saying the device cannot convert)."""
    if request.param == "bits":
        monkeypatch.setattr(quant_decode, "_converts_e4m3", lambda device_type, index: False)
    return request.param


@pytest.mark.parametrize("mode, codes", [("wf8af16", [c for c in range(256) if c & 0x7F != 0x7F]),
                                         ("wf6af16", list(range(64)))])
def test_decoding_every_code(mode, codes, e4m3_decoding):
    """x = the identity picks out each decoded weight: every e4m3 code (but NaN) and every e3m2 code, through
    the tl.dot kernel and the GEMV (8 rows of the identity at a time)."""
    k = len(codes)
    raw = torch.tensor(codes, dtype=torch.uint8, device=DEVICE)[None, :]
    if mode == "wf6af16":
        data, values = fmt.pack_fp6(raw), fmt.decode_e3m2(raw)
    else:
        data, values = raw.view(torch.float8_e4m3fn), raw.view(torch.float8_e4m3fn).float()
    weight = QuantizedWeight(data, torch.ones(1, device=DEVICE), mode, k)
    identity = torch.eye(k, device=DEVICE)
    assert torch.equal(triton_quant.weight_only_linear(identity, weight)[:, 0], values[0])
    tiles = quant_gemv.launch_config()
    by_gemv = torch.cat([quant_gemv.quant_gemv(rows, weight, None, tiles) for rows in identity.split(8)])
    assert torch.equal(by_gemv[:, 0], values[0])


@pytest.mark.skipif(not FP8_GEMM, reason="FP8 GEMMs need an sm_89+ GPU (Ada, Hopper)")
@pytest.mark.parametrize("tokens", [9, 64, 300])
@pytest.mark.parametrize("k, n", [(4096, 6144), (14336, 4096), (64, 32)])
def test_fp8_gemm_matches_reference(tokens, k, n):
    x, weight, bias = _projection(tokens, k, n, torch.bfloat16, "fp8")
    ours, theirs = triton_quant.TritonQuantLinear()(x, weight, bias), reference(x, weight, bias)
    torch.testing.assert_close(ours, theirs, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("tokens", [9, 40])
def test_fp8_gemm_path_matches_reference(tokens):
    """The many-token "fp8" path's arithmetic (torch._scaled_mm runs on the CPU too)."""
    x, weight, bias = _projection(tokens, 64, 32, torch.float32, "fp8")
    torch.testing.assert_close(triton_quant.fp8_gemm_linear(x, weight, bias), reference(x, weight, bias),
                               **FP8_PATH_TOL)


@pytest.mark.parametrize("capability, quantizes_x", [((8, 0), False), ((9, 0), True)])
def test_fp8_gemms_only_from_sm89_else_weight_only_with_a_log_line(capability, quantizes_x, monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "a test GPU")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    x, weight, bias = _projection(20, 64, 32, torch.float32, "fp8")
    weight_only = QuantizedWeight(weight.data, weight.scale, "wf8af16", weight.in_features)
    with caplog.at_level("WARNING"):
        got = triton_quant.TritonQuantLinear()(x, weight, bias)
    expected = reference(x, weight if quantizes_x else weight_only, bias)
    torch.testing.assert_close(got, expected, **FP8_PATH_TOL)
    logged = "has no FP8 GEMMs; running the weight-only FP8 path" in caplog.text
    assert logged != quantizes_x


# ---- shipped block-wise FP8: a scale per row and group of input columns (checkpoints stored in FP8)

GROUPED_SMALL = [(70, 24, 32), (96, 40, 16), (64, 24, 24)]  # (K, N, group): ragged last group; 24 is not a
GROUPED_REAL = [(4096, 6144, 128), (14336, 4096, 128)]      # power of two: the dequantizing fallback


def _grouped_weight(k, n, group, seed=0):
    """e4m3 codes and random positive scales [N, ceil(K / group)], as a block-wise checkpoint ships them."""
    codes = fmt.to_e4m3(randn(n, k, scale=100.0, seed=seed))
    columns = -(-k // group)
    scale = (torch.rand(n, columns, generator=torch.Generator(device=DEVICE).manual_seed(seed + 1), device=DEVICE)
             + 0.5) * k ** -0.5 / 100
    return QuantizedWeight(codes, scale, "wf8af16", k, group)


def _by_hand(x, weight, bias):
    """float64: each code times the scale of its row and column group, looped over the groups."""
    values = weight.data.double().clone()
    for g in range(weight.scale.shape[1]):
        values[:, g * weight.group_size:(g + 1) * weight.group_size] *= weight.scale[:, g:g + 1].double()
    return x.double() @ values.t() + bias.double()


@pytest.mark.parametrize("tokens", [1, 20])
@pytest.mark.parametrize("k, n, group", GROUPED_SMALL)
def test_reference_applies_each_column_groups_scale(tokens, k, n, group):
    x, bias = randn(tokens, k, seed=3), randn(n, seed=4)
    weight = _grouped_weight(k, n, group)
    torch.testing.assert_close(reference(x, weight, bias).double(), _by_hand(x, weight, bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tokens", [1, 3, 20])
@pytest.mark.parametrize("k, n, group, dtype", cases(GROUPED_SMALL, GROUPED_REAL))
def test_grouped_scales_match_reference(tokens, k, n, group, dtype):
    x, bias = randn(tokens, k + 8, dtype=dtype, seed=5)[:, 4:4 + k], randn(n, dtype=dtype, seed=6)
    weight = _grouped_weight(k, n, group)
    assert_matches(triton_quant.TritonQuantLinear()(x, weight, bias), reference(x, weight, bias))
