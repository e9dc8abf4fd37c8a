"""The paged attention op's options (``AttentionParams``: ALiBi, logit soft-capping, with windows and GQA),
both the PyTorch reference and the Triton kernels, against a plain dense attention written here.

The dense attention gathers each sequence's keys from the cache through its block table and computes, for
each new token at position p and head h, softmax_j(cap·tanh(scale·q·k_j / cap) + slope_h·(j − p)) over the
visible keys j (j ≤ p, p − j < window) in float64, one sequence at a time: nothing of the op's code.
Without CUDA the Triton kernels run under the interpreter (tests/conftest.py) at small shapes and tiles.
"""
from __future__ import annotations

import math

import pytest
import torch

from mii_core.model.ops import AttentionParams
from mii_kernels.torch_ref.attention import paged_attention as reference_op

pytest.importorskip("triton", reason="triton comes with mii-kernels on Linux only")
from test_triton_attention import DEVICE, MIXED, attention, layout, make_case  # noqa: E402

TRITON = attention()  # small tiles on the CPU, so that short sequences cross tile edges


def alibi_slopes(heads: int) -> torch.Tensor:
    """Press et al.'s slopes as HF's build_alibi_tensor makes them (non-powers of two included)."""
    closest = 2 ** math.floor(math.log2(heads))
    base = 2 ** (-(2 ** -(math.log2(closest) - 3)))
    slopes = [base ** i for i in range(1, closest + 1)]
    if closest != heads:
        extra = 2 ** (-(2 ** -(math.log2(2 * closest) - 3)))
        slopes += [extra ** i for i in range(1, 2 * (heads - closest) + 1, 2)]
    return torch.tensor(slopes, dtype=torch.float32, device=DEVICE)


def dense_attention(q, k_cache, v_cache, seqs, tables, block_size, params: AttentionParams) -> torch.Tensor:
    # the slopes copied to the host once: a copy of one slope per key position and head (a GPU sync each)
    # held every shard of the H200's check run (15 processes time-sharing the GPU) here for its whole budget
    slopes = None if params.alibi_slopes is None else params.alibi_slopes.double().cpu()
    out, row = torch.zeros(q.shape, dtype=torch.float64), 0
    per_kv = q.shape[1] // k_cache.shape[2]
    for (seen, new), table in zip(seqs, tables):
        context = seen + new
        slots = [table[j // block_size] * block_size + j % block_size for j in range(context)]
        keys = k_cache.reshape(-1, *k_cache.shape[2:])[slots].double()    # [context, Hkv, D]
        values = v_cache.reshape(-1, *v_cache.shape[2:])[slots].double()
        for p in range(seen, context):
            for h in range(q.shape[1]):
                scores = keys[:, h // per_kv] @ q[row, h].double() * params.scale
                if params.logit_softcap is not None:
                    scores = params.logit_softcap * torch.tanh(scores / params.logit_softcap)
                j = torch.arange(context, dtype=torch.float64)
                if slopes is not None:
                    scores = scores + slopes[h] * (j - p)
                visible = j <= p if params.window is None else (j <= p) & (p - j < params.window)
                probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=0)
                out[row, h] = probs @ values[:, h // per_kv]
            row += 1
    return out


OPTIONS = {
    "alibi": dict(alibi=True),
    "alibi+window": dict(alibi=True, window=7),
    "softcap": dict(softcap=2.0),
    "softcap+window": dict(softcap=2.0, window=9),
    "alibi+softcap": dict(alibi=True, softcap=3.0),
}
HEADS = {"mha-6": (6, 6, 32), "gqa-12/4": (12, 4, 16), "mqa-5/1": (5, 1, 32)}  # q heads, kv heads, head size


def make(heads: str, option: str, dtype: torch.dtype, seed: int = 0):
    q_heads, kv_heads, head_dim = HEADS[heads]
    case = make_case(layout(seed, **MIXED), q_heads, kv_heads, head_dim, 8, window=OPTIONS[option].get("window"),
                     seed=seed)
    options = OPTIONS[option]
    params = AttentionParams(scale=4 * head_dim ** -0.5,  # scores of a few units, so the cap really bends them
                             window=options.get("window"),
                             alibi_slopes=alibi_slopes(q_heads) if options.get("alibi") else None,
                             logit_softcap=options.get("softcap"))
    q = (case.q * 1.0).to(dtype)
    want = dense_attention(q.cpu(), case.k.to(dtype).cpu(), case.v.to(dtype).cpu(), case.seqs,
                           case.batch.block_tables.tolist(), 8, params)
    return case, q, params, want


def tolerance(dtype: torch.dtype) -> dict:
    # torch.testing's defaults for the dtype, with atol raised to the dtype's resolution near the outputs'
    # size (~0.1-1) for 16 bits: its 1e-5 is below one 16-bit step there
    return {torch.float32: dict(atol=1e-5, rtol=1.3e-6), torch.bfloat16: dict(atol=2e-2, rtol=1.6e-2),
            torch.float16: dict(atol=2e-3, rtol=1e-3)}[dtype]


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("heads", list(HEADS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_reference_op_matches_dense_attention(option, heads, dtype):
    case, q, params, want = make(heads, option, dtype)
    got = reference_op(q, case.k.to(dtype), case.v.to(dtype), case.batch, params)
    torch.testing.assert_close(got.double().cpu(), want.to(dtype).double(), **tolerance(dtype))


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("heads", list(HEADS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
def test_triton_kernels_match_dense_attention(option, heads, dtype):
    """Prompt chunks (the prefill kernel) beside decodes (the decode kernel), over a poisoned cache."""
    case, q, params, want = make(heads, option, dtype)
    got = TRITON(q, case.k_poisoned.to(dtype), case.v_poisoned.to(dtype), case.poisoned_batch(), params)
    torch.testing.assert_close(got.double().cpu(), want.to(dtype).double(), **tolerance(dtype))


@pytest.mark.parametrize("option", ["alibi", "alibi+window", "softcap"])
def test_split_decodes_merge_with_the_options(option):
    """The split-K decode kernel (several key ranges per decode, merged by the reduce kernel)."""
    case, q, params, want = make("gqa-12/4", option, torch.float32, seed=3)
    got = attention(decode_splits=3)(q, case.k_poisoned.to(q.dtype), case.v_poisoned.to(q.dtype), case.poisoned_batch(),
                                     params)
    torch.testing.assert_close(got.double().cpu(), want, **tolerance(torch.float32))


def test_alibi_slopes_are_hfs_for_power_and_non_power_of_two_heads():
    """Worked by hand from the paper: 8 heads -> 2^-1 .. 2^-8; 6 heads -> the 4-head slopes 2^-2, 2^-4,
    2^-6, 2^-8, then the 8-head slopes of odd powers 2^-1, 2^-3."""
    assert alibi_slopes(8).tolist() == [2.0 ** -i for i in range(1, 9)]
    assert alibi_slopes(6).tolist() == [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8, 2.0 ** -1, 2.0 ** -3]


def test_params_refuse_bad_values():
    with pytest.raises(ValueError, match="logit_softcap"):
        AttentionParams(1.0, logit_softcap=0.0)
    with pytest.raises(ValueError, match="alibi_slopes"):
        AttentionParams(1.0, alibi_slopes=torch.ones(2, 2))
