"""Each Triton kernel of ``mii_kernels.triton`` against its PyTorch reference (``mii_kernels.torch_ref``).

Without CUDA the kernels run under the Triton interpreter (TRITON_INTERPRET=1, set in tests/conftest.py)
at small shapes, in float32 (equal to float32 rounding) and float16 (rounded where the reference rounds).
With CUDA the same small cases run compiled, and bfloat16 cases at Llama-3-8B / Mixtral shapes are added
(hidden 4096, 32/8 heads of 128, up to 4096 tokens; 8 experts of 14336, top-2).
"""
from __future__ import annotations

from importlib.util import find_spec

import pytest
import torch

from mii_core.plugins.registries import KernelRegistry
from mii_kernels.torch_ref import activations as ref_activations
from mii_kernels.torch_ref import moe as ref_moe
from mii_kernels.torch_ref import norms as ref_norms
from mii_kernels.torch_ref import rotary as ref_rotary

pytest.importorskip("triton", reason="triton comes with mii-kernels on Linux only")
from mii_kernels.triton import activations, moe, norms, rotary  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")


def cases(small, real=()):
    """Small float32 (and float16) cases everywhere; real-shape bfloat16 cases only where there is a GPU.

    float16 checks the rounding order on the CPU too: the interpreter rounds float16 to nearest even as
    a GPU does, while its bfloat16 is unusable (conversions truncate; tl.dot multiplies the raw bits).
    """
    params = [pytest.param(*case, dtype, id=f"{str(dtype)[6:]}-{case}")
              for dtype in (torch.float32, torch.float16) for case in small]
    if CUDA:
        params += [pytest.param(*case, torch.bfloat16, id=f"bfloat16-{case}") for case in real]
    return params


def randn(*shape, dtype=torch.float32, scale=1.0, seed=0):
    generator = torch.Generator(device=DEVICE).manual_seed(seed)
    return (torch.randn(*shape, generator=generator, device=DEVICE) * scale).to(dtype)


def assert_matches(actual, expected):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if expected.dtype == torch.float32:
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
        return
    torch.testing.assert_close(actual, expected)
    assert_rounded_alike(actual, expected)


def assert_rounded_alike(actual, expected):
    """16-bit: the kernels round where PyTorch rounds, so nearly every element is bit-identical; the rare
    exception is a float32 sum or exp() a few ulps apart that lands on a rounding boundary. Rounding once
    where the reference rounds twice changed 20-55% of the elements in trials."""
    differing = (actual != expected).float().mean().item()
    assert differing <= 0.1, f"{differing:.1%} of the elements differ from the reference"


def strided_rows(tokens, width, dtype, seed):
    """A [tokens, width] view whose rows are further apart than its width (like a slice of a fused output)."""
    return randn(tokens, width + 24, dtype=dtype, seed=seed)[:, 8:8 + width]


# ---------------------------------------------------------------- norms

NORM_SMALL = [(7, 40), (1, 64), (5, 129)]
NORM_REAL = [(1, 4096), (4096, 4096), (333, 5120)]


@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("tokens, hidden, dtype", cases(NORM_SMALL, NORM_REAL))
def test_rms_norm_matches_reference(tokens, hidden, dtype, with_residual):
    x = strided_rows(tokens, hidden, dtype, seed=1)
    weight = randn(hidden, dtype=dtype, seed=2)
    residual = strided_rows(tokens, hidden, dtype, seed=3) if with_residual else None
    got = norms.rms_norm(x, weight, 1e-5, residual=residual)
    want = ref_norms.rms_norm(x, weight, 1e-5, residual=residual)
    if with_residual:
        assert torch.equal(got[1], want[1])  # the sum is one rounding in both: identical
        got, want = got[0], want[0]
    assert_matches(got, want)


@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("tokens, hidden, dtype", cases(NORM_SMALL, NORM_REAL))
def test_layer_norm_matches_reference(tokens, hidden, dtype, with_residual, with_bias):
    x = strided_rows(tokens, hidden, dtype, seed=4) + 0.5  # a mean away from 0 tests the centring
    weight = randn(hidden, dtype=dtype, seed=5)
    bias = randn(hidden, dtype=dtype, seed=6) if with_bias else None
    residual = strided_rows(tokens, hidden, dtype, seed=7) if with_residual else None
    got = norms.layer_norm(x, weight, bias, 1e-5, residual=residual)
    want = ref_norms.layer_norm(x, weight, bias, 1e-5, residual=residual)
    if with_residual:
        assert torch.equal(got[1], want[1])
        got, want = got[0], want[0]
    assert_matches(got, want)


@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("op", ["rms_norm", "offset_rms_norm", "layer_norm"])
def test_norms_join_the_largest_output(op, with_residual):
    """With ``amax`` each norm joins max |normed| (torch's, of the output it returned) into it, one program a
    row (the largest in the last of 7 rows); the outputs are the plain call's, bit for bit; a larger amax stays."""
    x = strided_rows(7, 40, torch.float32, seed=1)
    x[-1, 3] = 30.0
    residual = strided_rows(7, 40, torch.float32, seed=3) if with_residual else None
    weight = 1.0 + 0.1 * randn(40, dtype=torch.float32, seed=2)  # near 1 (and 1 + w near 2): the spike stays largest
    extra = (weight * 0.1,) if op == "layer_norm" else ()  # layer_norm's bias
    args = (x, weight, *extra, 1e-5, residual)
    kernel = getattr(norms, op)
    for start in (0.0, 1e4):
        amax = torch.full((), start, dtype=torch.float32, device=DEVICE)
        got, plain = kernel(*args, amax), kernel(*args)
        normed = got[0] if with_residual else got
        assert all(torch.equal(a, b) for a, b in zip(got, plain)) if with_residual else torch.equal(got, plain)
        assert normed.abs().max().item() == normed[-1].abs().max().item() > 0
        assert amax.item() == max(start, normed.abs().max().item())


# Gemma's (1 + w) norm against HF's GemmaRMSNorm (float32 math, one cast): at the widths of Gemma-2-2B, Gemma-2-9B
# and Gemma 3's q/k head norms (a row per head)
OFFSET_NORM_REAL = [(1, 3584), (4096, 3584), (333, 2304), (4096, 256)]


def hf_gemma_norm(x, weight, eps):
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

    norm = GemmaRMSNorm(x.shape[-1], eps=eps).to(device=x.device, dtype=weight.dtype)
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)


def assert_within_one_ulp(actual, expected):
    """16-bit: the kernel's float32 sum of squares runs in another order than torch's mean, and its rsqrt may be
    an ulp off torch's; a float32 result a few ulps apart rounds to the other 16-bit neighbour only when it
    lies that close to a rounding boundary, so a rare element is one ulp off and nearly all are bit-equal.
    Llama's order (a second rounding) changes far more than 1% (checked below)."""
    magnitude = expected.abs()
    ulp = (torch.nextafter(magnitude, torch.full_like(magnitude, float("inf"))) - magnitude).float()
    assert ((actual.float() - expected.float()).abs() <= ulp).all(), "an element is more than one ulp off HF's"
    differing = (actual != expected).float().mean().item()
    assert differing <= 0.01, f"{differing:.2%} of the elements differ from HF's"


@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("tokens, hidden, dtype", cases(NORM_SMALL, OFFSET_NORM_REAL))
def test_offset_rms_norm_matches_hf_gemma(tokens, hidden, dtype, with_residual):
    x = strided_rows(tokens, hidden, dtype, seed=11) * 3
    weight = randn(hidden, dtype=dtype, scale=0.5, seed=12)  # Gemma stores offsets from 1
    residual = strided_rows(tokens, hidden, dtype, seed=13) if with_residual else None
    got = norms.offset_rms_norm(x, weight, 1e-6, residual=residual)
    summed = x
    if with_residual:
        summed = x + residual  # rounded to x's dtype before the norm reads it, as HF's decoder layer does
        assert torch.equal(got[1], summed)
        got = got[0]
    want = hf_gemma_norm(summed, weight, 1e-6)
    assert got.dtype == want.dtype == dtype and got.shape == want.shape
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        return
    assert_within_one_ulp(got, want)
    llama_order = norms.rms_norm(summed, weight + 1, 1e-6)  # cast, then (1 + w): must not pass the check
    assert (llama_order != want).float().mean().item() > 0.01, "the check cannot tell the orders apart"


# ---------------------------------------------------------------- gated activation

@pytest.mark.parametrize("activation", ["silu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("tokens, features, dtype", cases([(6, 37), (1, 64)], [(4096, 14336), (3, 14336)]))
def test_gated_activation_matches_reference(tokens, features, dtype, activation):
    gate_up = strided_rows(tokens, 2 * features, dtype, seed=8) * 3  # tails of the activations too
    assert_matches(activations.gated_activation(gate_up, activation),
                   ref_activations.gated_activation(gate_up, activation))


@pytest.mark.parametrize("tokens, features, start", [(6, 37, 0.0), (1101, 24, 0.0), (1101, 24, 1e4), (2, 64, 0.0)])
def test_gated_activation_joins_the_largest_output(tokens, features, start):
    """With ``amax``, the kernel joins max |output| (worked out by torch from the output it returned) into it:
    1,101 rows over 512 row programs take three turns, the third for 77 of them only (the others past the last
    row), and the largest value sits in that last row; an amax already larger stays as it was. The output is the plain call's, bit for bit."""
    gate_up = strided_rows(tokens, 2 * features, torch.float32, seed=9) * 3
    gate_up[-1, 5], gate_up[-1, features + 5] = 40.0, -50.0  # silu(40) · -50 ≈ -2000: the largest, last row
    amax = torch.full((), start, dtype=torch.float32, device=DEVICE)
    out = activations.gated_activation(gate_up, "silu", amax)
    assert torch.equal(out, activations.gated_activation(gate_up, "silu"))
    largest = out.abs().max().item()
    assert largest > 1900
    assert amax.item() == max(start, largest)


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(ValueError, match="relu2.*silu"):
        activations.gated_activation(randn(2, 8), "relu2")


# ---------------------------------------------------------------- rotary + KV write

def fused_qkv(tokens, q_heads, kv_heads, dim, dtype):
    """q, k, v as the strided views of one fused projection output the model hands over."""
    qkv = randn(tokens, (q_heads + 2 * kv_heads) * dim, dtype=dtype, seed=9)
    q, k, v = qkv.split([q_heads * dim, kv_heads * dim, kv_heads * dim], dim=-1)
    return q.view(tokens, q_heads, dim), k.view(tokens, kv_heads, dim), v.view(tokens, kv_heads, dim)


def angles(tokens, rotary_dim, dtype, strided=False):
    """cos/sin [T, rotary_dim] in HF's rotate-half layout, optionally as views of a wider table."""
    if rotary_dim == 0:
        return None, None
    theta = randn(tokens, rotary_dim // 2, seed=10, scale=3.0).float()
    cos, sin = (torch.cat((f, f), dim=-1).to(dtype) for f in (theta.cos(), theta.sin()))
    if strided:
        cos, sin = (torch.cat((t, t), dim=-1)[:, :rotary_dim] for t in (cos, sin))
    return cos, sin


def run_both(q, k, v, cos, sin, rotary_dim, slots, block_size=4, num_blocks=None):
    """(got, want) of q and both caches; the caches start from the same random contents so a stray
    write anywhere shows."""
    tokens, kv_heads, dim = k.shape
    num_blocks = num_blocks or tokens // block_size + 3
    k_cache = randn(num_blocks, block_size, kv_heads, dim, dtype=q.dtype, seed=11)
    v_cache = randn(num_blocks, block_size, kv_heads, dim, dtype=q.dtype, seed=12)
    ref_caches = k_cache.clone(), v_cache.clone()
    got_q = rotary.rotary_write_kv(q, k, v, cos, sin, rotary_dim, k_cache, v_cache, slots)
    want_q = ref_rotary.rotary_write_kv(q, k, v, cos, sin, rotary_dim, *ref_caches, slots)
    return (got_q, k_cache, v_cache), (want_q, *ref_caches)


def free_slots(tokens, block_size=4, seed=13):
    """Distinct slots scattered over the cache (blocks out of order, as a block table has them)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm((tokens // block_size + 3) * block_size, generator=generator)[:tokens].to(DEVICE)


ROTARY_SMALL = [  # tokens, q heads, kv heads, head size, rotary_dim
    (5, 4, 2, 64, 64), (3, 4, 4, 80, 80), (4, 6, 2, 96, 96), (6, 4, 1, 128, 128), (2, 2, 1, 256, 256),
    (5, 4, 4, 80, 32),  # Phi-2: partial rotary 0.4 of 80
    (3, 4, 2, 64, 0),   # no rotation: the op only writes K/V
    (1, 4, 2, 64, 64),  # one token, a decode step (the unused scale placeholders once indexed row 1 of q)
]
ROTARY_REAL = [(4096, 32, 8, 128, 128), (1, 32, 8, 128, 128), (512, 32, 32, 80, 32), (64, 8, 1, 256, 256)]


@pytest.mark.parametrize("tokens, q_heads, kv_heads, dim, rotary_dim, dtype", cases(ROTARY_SMALL, ROTARY_REAL))
def test_rotary_write_kv_matches_reference(tokens, q_heads, kv_heads, dim, rotary_dim, dtype):
    q, k, v = fused_qkv(tokens, q_heads, kv_heads, dim, dtype)
    cos, sin = angles(tokens, rotary_dim, dtype, strided=tokens % 2 == 1)
    got, want = run_both(q, k, v, cos, sin, rotary_dim, free_slots(tokens))
    for got_tensor, want_tensor in zip(got, want):
        assert_matches(got_tensor, want_tensor)


def test_rotary_write_kv_skips_negative_slots():
    """Padding tokens of a captured graph carry slot -1: their K/V go nowhere, their q is still rotated."""
    q, k, v = fused_qkv(4, 2, 1, 64, torch.float32)
    cos, sin = angles(4, 64, torch.float32)
    real = torch.tensor([0, 2], device=DEVICE)
    real_slots = torch.tensor([5, 2], device=DEVICE)
    # the reference on the two real tokens alone, from the same starting caches
    _, (want_q, want_k_cache, want_v_cache) = run_both(q[real], k[real], v[real], cos[real], sin[real], 64,
                                                       real_slots, num_blocks=2)
    k_cache = randn(2, 4, 1, 64, seed=11)
    v_cache = randn(2, 4, 1, 64, seed=12)
    slots = torch.tensor([5, -1, 2, -1], device=DEVICE)
    got_q = rotary.rotary_write_kv(q, k, v, cos, sin, 64, k_cache, v_cache, slots)
    assert_matches(got_q[real], want_q)
    assert_matches(got_q, ref_rotary.rotary_write_kv(q, k, v, cos, sin, 64, k_cache.clone(), v_cache.clone(),
                                                     torch.arange(4, device=DEVICE)))
    assert_matches(k_cache, want_k_cache)
    assert_matches(v_cache, want_v_cache)


def test_bad_rotary_dim_is_a_clear_error():
    q, k, v = fused_qkv(2, 2, 2, 64, torch.float32)
    cache = torch.zeros(2, 4, 2, 64, device=DEVICE)
    with pytest.raises(ValueError, match="rotary_dim must be even"):
        rotary.rotary_write_kv(q, k, v, None, None, 33, cache, cache.clone(), torch.arange(2, device=DEVICE))


# ---------------------------------------------------------------- fused MoE

def routing(tokens, num_experts, top_k, idle_experts=(), seed=14):
    """Softmax top-k routing; ``idle_experts`` never win, so they get zero tokens."""
    logits = randn(tokens, num_experts, seed=seed, scale=2.0).float()
    logits[:, list(idle_experts)] = float("-inf")
    weights, ids = logits.softmax(dim=-1).topk(top_k, dim=-1)
    used = set(ids.unique().tolist())
    assert not used & set(idle_experts) and len(used) > 1, "routing must use several experts and skip the idle"
    return weights, ids


def experts(num_experts, hidden, features, dtype):
    """Weights scaled by 1/sqrt(fan-in) so activations stay O(1) at any size."""
    w_gate_up = randn(num_experts, 2 * features, hidden, dtype=dtype, seed=15, scale=hidden ** -0.5)
    w_down = randn(num_experts, hidden, features, dtype=dtype, seed=16, scale=features ** -0.5)
    return w_gate_up, w_down


MOE_SMALL = [  # tokens (10, 80 and 1,200 picks reach each block-size tier), hidden, features, experts, k, idle
    (5, 32, 48, 8, 2, (3, 6)), (40, 32, 48, 8, 2, (3,)), (600, 16, 32, 8, 2, (0, 7)),
    (9, 24, 40, 6, 3, (2,)),  # E not a power of two, k = 3
    (1, 32, 48, 8, 2, ()),    # one decode token: two experts used, six with zero tokens
]
MOE_REAL = [(1, 4096, 14336, 8, 2, ()), (256, 4096, 14336, 8, 2, (5,)), (4096, 4096, 14336, 8, 2, ())]


@pytest.mark.parametrize("tokens, hidden, features, num_experts, top_k, idle, dtype", cases(MOE_SMALL, MOE_REAL))
def test_moe_experts_matches_reference(tokens, hidden, features, num_experts, top_k, idle, dtype):
    x = strided_rows(tokens, hidden, dtype, seed=17)
    weights, ids = routing(tokens, num_experts, top_k, idle)
    w_gate_up, w_down = experts(num_experts, hidden, features, dtype)
    got = moe.moe_experts(x, weights, ids, w_gate_up, w_down, "silu")
    want = ref_moe.moe_experts(x, weights, ids, w_gate_up, w_down, "silu")
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        return
    if dtype == torch.float16:  # rounded where the reference rounds: nearly all elements identical, and the
        # few intermediates that accumulation order rounds the other way move outputs by far less than 0.1%
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3 * want.abs().max().item())
        assert_rounded_alike(got, want)
        return
    # bfloat16: both round the same intermediates, but in matmuls of different accumulation order; hold
    # each against float32 arithmetic on the same inputs and ask ours to be as accurate as the reference
    exact = ref_moe.moe_experts(x.float(), weights, ids, w_gate_up.float(), w_down.float(), "silu")
    ours, theirs = ((t.float() - exact).norm() / exact.norm() for t in (got, want))
    assert got.dtype == dtype and ours <= 1.5 * theirs + 1e-3, (ours, theirs)


def test_moe_experts_gelu_and_token_order():
    """Another activation, and tokens whose picks list the larger expert id first."""
    x = randn(6, 32, seed=18)
    ids = torch.tensor([[3, 0], [0, 3], [2, 1], [1, 2], [3, 1], [0, 2]], device=DEVICE)
    weights = randn(6, 2, seed=19).abs()
    w_gate_up, w_down = experts(4, 32, 48, torch.float32)
    torch.testing.assert_close(moe.moe_experts(x, weights, ids, w_gate_up, w_down, "gelu"),
                               ref_moe.moe_experts(x, weights, ids, w_gate_up, w_down, "gelu"),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(moe.CONFIGS))
def test_each_named_moe_config_matches_the_reference(name):
    """Every launch config kernel_bench_ops.py may pick on the GPU gives the reference's result (float32),
    at steps that reach every tier of them (3 picks a token over 6 experts: 9 tokens give 27 picks, 4.5 rows an
    expert; 40 give 120 and 20; 400 give 1,200 and 200)."""
    op = moe.TritonMoe(name)
    for tokens in (9, 40, 400):
        x = strided_rows(tokens, 24, torch.float32, seed=21)
        weights, ids = routing(tokens, 6, 3, (2,))
        w_gate_up, w_down = experts(6, 24, 40, torch.float32)
        torch.testing.assert_close(op(x, weights, ids, w_gate_up, w_down, "silu"),
                                   ref_moe.moe_experts(x, weights, ids, w_gate_up, w_down, "silu"),
                                   rtol=1e-4, atol=1e-5)


def test_moe_configs_pick_tiles_by_their_measure():
    """Worked by hand. Qwen3-MoE's decode at T = 256 (top-8 of 128 experts): 2,048 picks, 16 rows an expert:
    the default (by picks) takes its prefill tier, per_expert its middle (16 <= 128), per_expert_m16 its
    16-row tier (16 <= 32). Mixtral's 8 experts: per_expert gives the default's tier at every step."""
    tile = lambda name, picks, experts: moe._tile(moe.CONFIGS[name], picks, experts)[0]  # noqa: E731
    assert [tile(n, 2048, 128) for n in ("default", "per_expert", "per_expert_m16")] == [64, 32, 16]
    assert all(tile("per_expert", picks, 8) == tile("default", picks, 8) for picks in range(1, 3000))
    assert moe.TritonMoe().config == moe.CONFIGS["default"]


def test_moe_config_by_name_from_the_environment_or_refused(monkeypatch):
    monkeypatch.setenv("MII_TRITON_MOE_CONFIG", "per_expert_m16")
    assert moe.TritonMoe().config == moe.CONFIGS["per_expert_m16"]
    monkeypatch.setenv("MII_TRITON_MOE_CONFIG", "fastest")
    with pytest.raises(ValueError, match="unknown moe config 'fastest'; choose one of .*per_expert"):
        moe.TritonMoe()
    with pytest.raises(ValueError, match="'ladder'"):
        moe.TritonMoe({"by": "tokens", "ladder": ((None, (16, 64, 64, 1, 4, 3)),)})


def test_moe_align_groups_picks_by_expert_in_padded_blocks():
    """Worked by hand: picks 0..5 = (token 0: experts 0, 2), (1: 2, 0), (2: 2, 3); 4 experts, blocks of 4."""
    ids = torch.tensor([0, 2, 2, 0, 2, 3], device=DEVICE)
    sorted_picks, block_expert, num_blocks = moe._align(ids, num_experts=4, block_m=4)
    pad = 6
    # expert 0: picks 0, 3 | expert 1: none | expert 2: picks 1, 2, 4 | expert 3: pick 5 | unused tail
    assert num_blocks == 5  # the static bound: 6 picks + 4 experts * 3 padding = 18 slots -> 5 blocks
    assert sorted_picks.tolist() == [0, 3, pad, pad, 1, 2, 4, pad, 5, pad, pad, pad] + [pad] * 8
    assert block_expert.tolist()[:3] == [0, 2, 3]
    assert all(e >= 4 for e in block_expert.tolist()[3:])  # blocks past the used ones are skipped


def align_by_sorting(ids, num_experts, block_m):
    """The layout _align must produce, built another way: a stable sort by expert, each run copied to its
    padded start; blocks owned by the expert whose padded run holds their first slot."""
    picks = ids.numel()
    order = torch.sort(ids.cpu(), stable=True).indices
    counts = torch.bincount(ids.cpu(), minlength=num_experts)
    padded = (counts + block_m - 1) // block_m * block_m
    num_blocks = -(-(picks + min(num_experts, picks) * (block_m - 1)) // block_m)
    layout = torch.full((num_blocks * block_m,), picks, dtype=torch.int64)
    start, taken = 0, 0
    owners = []
    for expert in range(num_experts):
        layout[start:start + counts[expert]] = order[taken:taken + counts[expert]]
        owners += [expert] * (int(padded[expert]) // block_m)
        start, taken = start + int(padded[expert]), taken + int(counts[expert])
    return layout.tolist(), owners, num_blocks


@pytest.mark.parametrize("picks, num_experts, block_m, chunk", [
    (1, 8, 16, None), (8, 128, 16, None), (37, 6, 4, 4), (300, 16, 16, 16), (600, 128, 64, 16), (2048, 128, 16, None)])
def test_moe_align_matches_a_stable_sort_at_any_chunking(picks, num_experts, block_m, chunk):
    """Chunks of 4 or 16 picks make many count and scatter programs and several offset tiles, so runs that
    span chunks are joined in pick order; Qwen3-MoE's decode (2,048 picks, 128 experts) at the default chunk."""
    gen = torch.Generator().manual_seed(picks)
    ids = torch.randint(0, num_experts, (picks,), generator=gen)
    ids[ids == 1] = 2  # an idle expert: its run is empty
    sorted_picks, block_expert, num_blocks = moe._align(ids.to(DEVICE), num_experts, block_m, chunk=chunk)
    layout, owners, want_blocks = align_by_sorting(ids, num_experts, block_m)
    assert num_blocks == want_blocks and sorted_picks.tolist() == layout
    assert block_expert.tolist()[:len(owners)] == owners
    assert all(e >= num_experts for e in block_expert.tolist()[len(owners):])


# ---------------------------------------------------------------- registration

def test_plugin_registers_triton_for_cuda_above_the_reference():
    from mii_kernels.torch_ref import plugin as ref_plugin
    from mii_kernels.triton import plugin as triton_plugin
    registry = KernelRegistry()
    ref_plugin.mii_core_register_kernels(registry)
    triton_plugin.mii_core_register_kernels(registry)
    ops = ["rms_norm", "offset_rms_norm", "layer_norm", "rotary_write_kv", "gated_activation", "moe_experts"]
    if find_spec("mii_kernels.triton.attention") is not None:
        ops.append("paged_attention")
    else:
        assert registry.choose("paged_attention", "cuda").name == "torch_ref.paged_attention"
    for op in ops:
        assert registry.choose(op, "cuda").name == f"triton.{op}"
        assert registry.choose(op, "cpu").name == f"torch_ref.{op}"
        assert callable(registry.resolve(op, "cuda"))
