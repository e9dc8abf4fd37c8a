"""The seam by which a sequential layer leaves each RMSNorm to the linear its output goes into
(``mii_core/model/deferred_norm.py``; the kernels' fused ``rms_norm_linear`` / ``rms_norm_quant_linear``).

Checked on the CPU with the reference ops, the fused ones registered by a test plugin as a third party would
(each composing the reference norm and linear, so a layer through them must give the very bits of the same
layer through the plain reference set, and each records its calls): which ops a step reaches, what the layer
returns, which layers and blocks take the seam, and that a block misusing a deferred norm fails loudly."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support.kernel_sets import kernel_set  # noqa: E402

from mii_core.distributed.parallel_context import ParallelContext  # noqa: E402
from mii_core.model.attention import Attention  # noqa: E402
from mii_core.model.deferred_norm import DeferredNorm  # noqa: E402
from mii_core.model.layers import DecoderLayer  # noqa: E402
from mii_core.model.parts import DecoderParts  # noqa: E402
from mii_core.model.quantization import building_quantized  # noqa: E402
from mii_core.model.spec import DecoderSpec  # noqa: E402
from mii_kernels.torch_ref import linear as ref_linear  # noqa: E402
from mii_kernels.torch_ref import norms as ref_norms  # noqa: E402
from mii_kernels.torch_ref import quant_linear as ref_quant_linear  # noqa: E402

HIDDEN, FFN, FOLDED_MAX_TOKENS = 32, 48, 8
CALLS: list[str] = []


def acme_rms_norm(x, weight, eps, residual=None, amax=None):
    CALLS.append("rms_norm")
    return ref_norms.rms_norm(x, weight, eps, residual, amax)


def acme_linear(x, weight, bias):
    CALLS.append("linear")
    return ref_linear.linear(x, weight, bias)


def acme_quant_linear(x, weight, bias, x_amax=None):
    CALLS.append("quant_linear")
    return ref_quant_linear.quant_linear(x, weight, bias)


def _normed(x, residual, norm_weight, eps):
    return (ref_norms.rms_norm(x, norm_weight, eps), x) if residual is None else \
        ref_norms.rms_norm(x, norm_weight, eps, residual)


def _folding(product, name: str):
    """A fused op as a GEMV fusing the norm would be: a few tokens only, else ``NotImplemented``."""
    def fused(x, residual, norm_weight, eps, weight, bias):
        CALLS.append(name)
        if x.shape[0] > FOLDED_MAX_TOKENS:
            return NotImplemented
        normed, summed = _normed(x, residual, norm_weight, eps)
        return product(normed, weight, bias), summed
    return fused


acme_rms_norm_linear = _folding(ref_linear.linear, "rms_norm_linear")
acme_rms_norm_quant_linear = _folding(ref_quant_linear.quant_linear, "rms_norm_quant_linear")


ACME = {op: f"{__name__}:acme_{op}" for op in ("rms_norm", "linear", "quant_linear", "rms_norm_linear",
                                                "rms_norm_quant_linear")}


def spec(**options) -> DecoderSpec:
    return DecoderSpec(vocab_size=64, hidden_size=HIDDEN, num_layers=1, num_heads=4, num_kv_heads=2, head_dim=8,
                       intermediate_size=FFN, max_position_embeddings=64, **options)


def layer(kernels, mode=None, parts=DecoderParts(), device=torch.device("cpu"), **options) -> DecoderLayer:
    """A decoder layer with every parameter drawn from its name (so two builds hold the same values)."""
    with building_quantized(mode):
        built = DecoderLayer(spec(**options), ParallelContext(0, 1), kernels, device, torch.float32, parts=parts)
    for index, (name, param) in enumerate(sorted(built.named_parameters())):
        values = torch.randn(param.shape, generator=torch.Generator().manual_seed(index)) * 0.3
        if name.endswith("norm.weight"):
            values = values.abs() + 0.7
        loader = getattr(param, "weight_loader", None)
        loader(param, values, None) if loader is not None else param.data.copy_(values)
    return built


def run(built: DecoderLayer, tokens: int, with_residual: bool, device=torch.device("cpu")):
    """The layer over a prompt of ``tokens`` (its (output, residual)), the input and residual drawn alike."""
    from mii_core.batch import build_ragged_batch
    from mii_core.model.rotary import RotaryEmbedding

    gen = torch.Generator().manual_seed(tokens)
    hidden = torch.randn(tokens, HIDDEN, generator=gen).to(device)
    residual = torch.randn(tokens, HIDDEN, generator=gen).to(device) if with_residual else None
    blocks = -(-tokens // 16)
    batch = build_ragged_batch([[0] * tokens], [0], [list(range(1, blocks + 1))], 16, device)
    cache = [torch.zeros(blocks + 1, 16, 2, 8, device=device) for _ in range(2)]
    rotary = RotaryEmbedding(spec().rope, 8, 64, device)
    return built(hidden, residual, batch, rotary.tables(batch, torch.float32), cache)


@pytest.fixture(autouse=True)
def _fresh_calls():
    CALLS.clear()


@pytest.mark.parametrize("with_residual", [True, False])
@pytest.mark.parametrize("mode", [None, "fp8", "wf6af16"])
def test_a_few_token_step_folds_both_norms_into_their_linears(mode, with_residual):
    folded = layer(kernel_set(**ACME), mode)
    assert folded.defers == (True, True)
    out, residual = run(folded, 3, with_residual)
    fused = "rms_norm_linear" if mode is None else "rms_norm_quant_linear"
    assert CALLS.count(fused) == 2 and "rms_norm" not in CALLS
    want_out, want_residual = run(layer(kernel_set(), mode), 3, with_residual)
    assert torch.equal(out, want_out) and torch.equal(residual, want_residual)


def test_a_step_the_fused_op_declines_runs_the_norms_by_themselves():
    folded = layer(kernel_set(**ACME), "fp8")
    out, residual = run(folded, FOLDED_MAX_TOKENS + 4, True)
    assert CALLS.count("rms_norm_quant_linear") == 2 and CALLS.count("rms_norm") == 2
    want_out, want_residual = run(layer(kernel_set(), "fp8"), FOLDED_MAX_TOKENS + 4, True)
    assert torch.equal(out, want_out) and torch.equal(residual, want_residual)


def test_only_a_sequential_layers_plain_rms_norms_and_core_blocks_with_a_fused_op_defer():
    assert layer(kernel_set()).defers == (False, False)  # the reference registers no fused op
    # a fused op from a plugin that does not also serve the norm and the linear is never used
    assert layer(kernel_set(rms_norm_linear=ACME["rms_norm_linear"])).defers == (False, False)
    assert layer(kernel_set(**ACME), layout="parallel", parallel_norms=2).defers == (False, False)
    # a plugin fusing the norm into its plain linear only: a model built quantized keeps its norms apart
    plain_only = {op: target for op, target in ACME.items() if op != "rms_norm_quant_linear"}
    assert layer(kernel_set(**plain_only)).defers == (True, True)
    assert layer(kernel_set(**plain_only), "fp8").defers == (False, False)
    assert layer(kernel_set(**ACME), norm="layer").defers == (False, False)

    class OwnForward(Attention):
        def forward(self, hidden, batch, rope, kv_cache):
            return super().forward(hidden, batch, rope, kv_cache)

    assert layer(kernel_set(**ACME), parts=DecoderParts(attention=OwnForward)).defers == (False, True)


def test_a_block_reading_a_deferred_norm_otherwise_fails_loudly():
    norm = layer(kernel_set(**ACME)).attn_norm
    deferred = DeferredNorm(norm, torch.ones(2, HIDDEN), None)
    assert deferred.shape == (2, HIDDEN) and deferred.dtype == torch.float32
    with pytest.raises(TypeError):
        deferred * 2
    with pytest.raises(RuntimeError, match="input_linear"):
        deferred.summed()
    linear = layer(kernel_set(**ACME)).attn.qkv
    linear(deferred)
    assert torch.equal(deferred.summed(), torch.ones(2, HIDDEN))
    with pytest.raises(RuntimeError, match="one linear only"):
        linear(deferred)
