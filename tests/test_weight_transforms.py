"""The core's weight transforms against HF's own rotary code: GPT-J's interleaved (rotate-every-two) q/k
rows, permuted by ``rotary_pairs_to_halves`` and rotated in HF Llama's rotate-half layout (the one the
``rotary_write_kv`` op implements), give the same attention scores as GPT-J's rotation of the originals."""
import pytest
import torch
from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb as gptj_rotary
from transformers.models.gptj.modeling_gptj import create_sinusoidal_positions
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as half_rotary

from mii_core.model.spec import DecoderSpec, RopeSpec
from mii_core.model.weight_rules import rotary_pairs_to_halves

HEADS, HEAD_DIM, HIDDEN, TOKENS = 3, 8, 12, 5


def spec(rotary_dim):
    return DecoderSpec(vocab_size=10, hidden_size=HIDDEN, num_layers=1, num_heads=HEADS, num_kv_heads=HEADS,
                       head_dim=HEAD_DIM, intermediate_size=16, max_position_embeddings=32,
                       rope=RopeSpec(rotary_dim=rotary_dim))


def gptj_heads(weight, hidden, rotary_dim):
    """GPT-J's attention path: project, split heads, rotate the first rotary_dim features every-two."""
    x = (hidden @ weight.t()).view(1, TOKENS, HEADS, HEAD_DIM)
    sin, cos = torch.split(create_sinusoidal_positions(TOKENS, rotary_dim)[None], rotary_dim // 2, dim=-1)
    rotated = gptj_rotary(x[..., :rotary_dim], sin, cos)
    return torch.cat([rotated, x[..., rotary_dim:]], dim=-1).transpose(1, 2)  # [1, heads, T, D]


def half_layout_heads(weight, hidden, rotary_dim):
    """The engine's path: permuted rows, rotate-half on the first rotary_dim features (HF Llama's code)."""
    x = (hidden @ weight.t()).view(1, TOKENS, HEADS, HEAD_DIM).transpose(1, 2)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim))
    freqs = torch.arange(TOKENS).float()[:, None] * inv_freq
    angles = torch.cat([freqs, freqs], dim=-1)[None]
    rotated, _ = half_rotary(x[..., :rotary_dim], x[..., :rotary_dim], angles.cos(), angles.sin())
    return torch.cat([rotated, x[..., rotary_dim:]], dim=-1)


@pytest.mark.parametrize("rotary_dim", [4, HEAD_DIM])
def test_permuted_rows_give_gptj_attention_scores(rotary_dim):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(TOKENS, HIDDEN, generator=gen)
    wq, wk = (torch.randn(HEADS * HEAD_DIM, HIDDEN, generator=gen) for _ in range(2))
    expected = gptj_heads(wq, hidden, rotary_dim) @ gptj_heads(wk, hidden, rotary_dim).transpose(-1, -2)
    permuted = [rotary_pairs_to_halves(w, spec(rotary_dim)) for w in (wq, wk)]
    got = half_layout_heads(permuted[0], hidden, rotary_dim) @ half_layout_heads(permuted[1], hidden,
                                                                                 rotary_dim).transpose(-1, -2)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)
    unpermuted = half_layout_heads(wq, hidden, rotary_dim) @ half_layout_heads(wk, hidden, rotary_dim).transpose(-1, -2)
    assert (unpermuted - expected).abs().max() > 1e-2, "the layouts must differ, or the test proves nothing"


def test_rows_not_in_whole_heads_are_refused():
    with pytest.raises(ValueError, match="whole heads of 8 rows"):
        rotary_pairs_to_halves(torch.zeros(HEAD_DIM + 1, HIDDEN), spec(4))
