"""The seam by which a gated MLP's activation (and a norm, and the attention) hands the projection after it
its input's largest |value|, so that mode "fp8"'s per-tensor quantization of that input need not read it
again (ops.py: ``gated_activation``'s and ``paged_attention``'s ``amax``, ``quant_linear``'s ``x_amax``).

Checked on the CPU with the reference ops, one of them replaced by a test kernel as a third-party plugin
would: what reaches ``quant_linear`` is compared with max |x| worked out by torch from the x it received,
and the MLP's output with the same MLP through the plain reference ops."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support.kernel_sets import kernel_set  # noqa: E402

from mii_core.distributed.parallel_context import ParallelContext  # noqa: E402
from mii_core.model.mlp import MLP  # noqa: E402
from mii_core.model.quantization import building_quantized  # noqa: E402
from mii_core.model.spec import DecoderSpec  # noqa: E402
from mii_kernels.torch_ref import activations as ref_activations  # noqa: E402
from mii_kernels.torch_ref import quant_linear as ref_quant_linear  # noqa: E402

HIDDEN, FFN = 32, 48
SEEN: list[dict] = []  # what the test kernels below were called with


def recording_quant_linear(x, weight, bias, x_amax=None):
    """The reference ``quant_linear``, declaring it takes ``x_amax``; notes what it got beside max |x|."""
    SEEN.append({"op": "quant_linear", "x_amax": None if x_amax is None else x_amax.item(),
                 "largest_x": x.abs().max().item(), "in_features": weight.in_features})
    return ref_quant_linear.quant_linear(x, weight, bias)


recording_quant_linear.takes_x_amax = True


def gated_without_amax(x, activation):
    """A third-party gated kernel that cannot join an absmax (no ``joins_amax``): two arguments only."""
    SEEN.append({"op": "gated_activation"})
    return ref_activations.gated_activation(x, activation)


def mlp(mode, **replaced):
    spec = DecoderSpec(vocab_size=64, hidden_size=HIDDEN, num_layers=1, num_heads=4, num_kv_heads=4, head_dim=8,
                       intermediate_size=FFN, max_position_embeddings=64)
    with building_quantized(mode):
        block = MLP(spec, ParallelContext(0, 1), kernel_set(**replaced), torch.device("cpu"), torch.float32)
    gen = torch.Generator().manual_seed(3)
    block.up.weight.weight_loader(block.up.weight, torch.randn(2 * FFN, HIDDEN, generator=gen) * 0.2, None)
    block.down.weight.weight_loader(block.down.weight, torch.randn(HIDDEN, FFN, generator=gen) * 0.2, None)
    return block


def hidden(tokens):
    return torch.randn(tokens, HIDDEN, generator=torch.Generator().manual_seed(tokens))


@pytest.fixture(autouse=True)
def _fresh_record():
    SEEN.clear()


def test_down_projection_gets_its_inputs_largest_value_in_a_many_token_fp8_step():
    block = mlp("fp8", quant_linear=f"{__name__}:recording_quant_linear")
    x = hidden(12)  # more than 8 tokens: mode "fp8" quantizes the down projection's input per tensor
    out = block(x)
    up, down = SEEN
    assert up["in_features"] == HIDDEN and up["x_amax"] is None  # the norm's output: not joined (yet)
    assert down["in_features"] == FFN and down["x_amax"] == down["largest_x"] > 0
    torch.testing.assert_close(out, mlp("fp8")(x), rtol=0, atol=0)


def test_no_amax_where_nothing_quantizes_the_input():
    for mode, tokens in (("fp8", 8), ("wf8af16", 12), (None, 12)):  # few tokens; weight-only; bf16 weights
        SEEN.clear()
        mlp(mode, quant_linear=f"{__name__}:recording_quant_linear")(hidden(tokens))
        assert all(call["x_amax"] is None for call in SEEN), (mode, tokens)


def test_no_amax_for_a_quant_linear_that_does_not_take_one():
    block = mlp("fp8", gated_activation=f"{__name__}:gated_without_amax")  # the reference quant_linear
    assert not block.kernels.takes_x_amax()
    assert block.down.activation_amax(12) is None
    block(hidden(12))
    assert SEEN == [{"op": "gated_activation"}]


def test_kernel_set_joins_the_amax_after_a_gated_kernel_that_cannot():
    kernels = kernel_set(gated_activation=f"{__name__}:gated_without_amax")
    x = torch.randn(5, 2 * FFN, generator=torch.Generator().manual_seed(1)) * 3
    amax = torch.zeros(())
    out = kernels.gated_activation(x, "silu", amax)
    gate, up = x.chunk(2, dim=-1)
    assert amax.item() == (torch.nn.functional.silu(gate) * up).abs().max().item() == out.abs().max().item()
    held = torch.tensor(1e4)  # an amax already larger stays
    kernels.gated_activation(x, "silu", held)
    assert held.item() == 1e4


def test_a_fed_norm_hands_its_outputs_largest_value_to_the_linear_it_feeds():
    from mii_core.model.norm import Norm
    from mii_core.model.parallel import ColumnParallelLinear

    kernels = kernel_set(quant_linear=f"{__name__}:recording_quant_linear")
    norm = Norm("rms", HIDDEN, 1e-6, kernels, torch.device("cpu"), torch.float32)
    norm.weight.data.copy_(torch.linspace(0.5, 2.0, HIDDEN))
    with building_quantized("fp8"):
        linear = ColumnParallelLinear(HIDDEN, [16, 16], False, ParallelContext(0, 1), kernels, torch.device("cpu"),
                                      torch.float32, part_names=("a", "b"))
    linear.weight.weight_loader(linear.weight, torch.randn(32, HIDDEN, generator=torch.Generator().manual_seed(5)),
                                None)
    norm.feed(linear)
    normed, _summed = norm(hidden(12), hidden(12).flip(0))
    out = linear(normed)
    (seen,) = SEEN
    assert seen["x_amax"] == seen["largest_x"] == normed.abs().max().item()
    torch.testing.assert_close(out, ref_quant_linear.quant_linear(normed, linear.weight_slot.quantized), rtol=0, atol=0)
    linear(normed.clone())  # another tensor than the one the norm made: nothing handed over
    linear(normed)  # the hand-over holds for one product only
    assert [call["x_amax"] for call in SEEN[1:]] == [None, None]


@pytest.mark.parametrize("layout, fed", [("sequential", True), ("parallel", False)])
def test_a_sequential_layers_norms_feed_their_blocks_first_linears(layout, fed):
    from mii_core.model.layers import DecoderLayer

    spec = DecoderSpec(vocab_size=64, hidden_size=HIDDEN, num_layers=1, num_heads=4, num_kv_heads=4, head_dim=8,
                       intermediate_size=FFN, max_position_embeddings=64, layout=layout, parallel_norms=2)
    layer = DecoderLayer(spec, ParallelContext(0, 1), kernel_set(), torch.device("cpu"), torch.float32)
    assert layer.attn_norm.feeds == ((layer.attn.qkv,) if fed else ())
    assert layer.mlp_norm.feeds == ((layer.mlp.up,) if fed else ())
    assert "feeds" not in dict(layer.attn_norm.named_modules())  # the linears stay their blocks' own


def attention_without_amax(q, k_cache, v_cache, batch, params):
    """A third-party attention that cannot join an absmax (no ``joins_amax``): five arguments only."""
    from mii_kernels.torch_ref.attention import paged_attention

    SEEN.append({"op": "paged_attention"})
    return paged_attention(q, k_cache, v_cache, batch, params)


def attention_block(tokens, **replaced):
    """The output of a Llama attention block in mode "fp8" run once over a prompt of ``tokens``."""
    from mii_core.batch import build_ragged_batch
    from mii_core.model.attention import Attention
    from mii_core.model.rotary import RotaryEmbedding

    spec = DecoderSpec(vocab_size=64, hidden_size=HIDDEN, num_layers=1, num_heads=4, num_kv_heads=2, head_dim=8,
                       intermediate_size=FFN, max_position_embeddings=64)
    with building_quantized("fp8"):
        block = Attention(spec, ParallelContext(0, 1), kernel_set(**replaced), torch.device("cpu"), torch.float32)
    gen = torch.Generator().manual_seed(4)
    block.qkv.weight.weight_loader(block.qkv.weight, torch.randn(64, HIDDEN, generator=gen) * 0.3, None)
    block.o_proj.weight.weight_loader(block.o_proj.weight, torch.randn(HIDDEN, 32, generator=gen) * 0.3, None)
    batch = build_ragged_batch([[0] * tokens], [0], [[0, 1]], 16, torch.device("cpu"))
    cache = [torch.zeros(2, 16, 2, 8) for _ in range(2)]
    rotary = RotaryEmbedding(spec.rope, spec.head_dim, spec.max_position_embeddings, torch.device("cpu"))
    rope = rotary.tables(batch, torch.float32)
    return block(hidden(tokens), batch, rope, cache)


def test_the_attention_hands_the_o_projection_its_outputs_largest_value():
    attention_block(12, quant_linear=f"{__name__}:recording_quant_linear")
    qkv, o_proj = SEEN
    assert qkv["in_features"] == HIDDEN and qkv["x_amax"] is None  # the block's input: no norm before it here
    assert o_proj["in_features"] == 32 and o_proj["x_amax"] == o_proj["largest_x"] > 0
    SEEN.clear()
    attention_block(8, quant_linear=f"{__name__}:recording_quant_linear")  # few tokens: weight-only, no scale
    assert [call["x_amax"] for call in SEEN] == [None, None]


def test_the_kernel_set_joins_the_amax_after_an_attention_that_cannot():
    out = attention_block(12, quant_linear=f"{__name__}:recording_quant_linear",
                          paged_attention=f"{__name__}:attention_without_amax")
    assert [call["op"] for call in SEEN] == ["quant_linear", "paged_attention", "quant_linear"]
    assert SEEN[2]["x_amax"] == SEEN[2]["largest_x"] > 0
    SEEN.clear()
    plain = attention_block(12)  # the reference ops throughout: the same output
    torch.testing.assert_close(out, plain, rtol=0, atol=0)
