"""The FP8 KV cache in both kernel packages: the reference's write and read against the contract worked out
by hand here (x / scale saturated to ±448, rounded to e4m3; read back as stored · scale), then the Triton
write (bytes equal to the reference's) and paged attention (close to the reference's, on caches poisoned
outside the visible keys) under the interpreter at small shapes, or on the GPU at real ones."""
from __future__ import annotations

import pytest
import torch

from mii_core.model.ops import AttentionParams
from mii_kernels.torch_ref import attention as ref_attention, rotary as ref_rotary
from mii_kernels.triton import attention as triton_attention, rotary as triton_rotary
from test_triton_attention import (DEVICE, DTYPE, LLAMA_HEADS, MIXED, TILES, TOLERANCE, by_device, layout,
                                   make_case)

FP8 = torch.float8_e4m3fn


def hand_quantize(x: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """[..., Hkv, D] over per-head scales [Hkv], as the contract states it (NaN stays NaN)."""
    inverse = torch.reciprocal(scales.float())[:, None]
    return (x.float() * inverse).clamp(-448.0, 448.0).to(FP8)


def hand_dequantize(stored: torch.Tensor, scales: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    return (stored.float() * scales.float()[:, None]).to(dtype)


def distinct_scales(kv_heads: int) -> torch.Tensor:
    """K and V scales that differ per head and are not powers of two (so a missed or swapped one shows)."""
    return torch.stack([torch.linspace(0.3, 2.7, kv_heads), torch.linspace(0.011, 0.05, kv_heads)]).to(DEVICE)


def qkv(tokens, q_heads, kv_heads, dim, seed=0):
    gen = torch.Generator(DEVICE).manual_seed(seed)
    q = torch.randn((tokens, q_heads, dim), generator=gen, device=DEVICE).to(DTYPE)
    k = torch.randn((tokens, kv_heads, dim), generator=gen, device=DEVICE).to(DTYPE) * 40
    v = torch.randn((tokens, kv_heads, dim), generator=gen, device=DEVICE).to(DTYPE) * 0.02
    k[0, 0, :3] = torch.tensor([1e4, -1e4, 1e-6])  # saturates both ways, and underflows
    return q, k, v


def empty_caches(blocks, block_size, kv_heads, dim):
    return [torch.zeros(blocks, block_size, kv_heads, dim, dtype=FP8, device=DEVICE) for _ in range(2)]


def test_reference_write_stores_what_the_contract_says():
    tokens, kv_heads, dim, block_size = 6, 2, 32, 4
    q, k, v = qkv(tokens, 4, kv_heads, dim)
    scales = distinct_scales(kv_heads)
    slots = torch.tensor([9, 2, 3, 14, 0, 7], device=DEVICE)
    k_cache, v_cache = empty_caches(4, block_size, kv_heads, dim)
    got_q = ref_rotary.rotary_write_kv(q, k, v, None, None, 0, k_cache, v_cache, slots, scales)
    assert torch.equal(got_q, q)
    for cache, x, row in ((k_cache, k, 0), (v_cache, v, 1)):
        want = hand_quantize(x, scales[row])
        assert torch.equal(cache.view(-1, kv_heads, dim)[slots].view(torch.uint8), want.view(torch.uint8))
    assert k_cache.view(-1, kv_heads, dim)[9, 0, 0].float() == 448.0  # saturated, not NaN


@pytest.mark.parametrize("params", [dict(), dict(window=5), dict(logit_softcap=2.0), dict(alibi=True)],
                         ids=["plain", "window", "softcap", "alibi"])
def test_reference_attention_reads_stored_times_scale(params):
    """Attention over an FP8 cache equals attention over a float32 cache holding the dequantized values."""
    q_heads, kv_heads, head_dim = LLAMA_HEADS
    case = make_case(layout(1, **MIXED), q_heads, kv_heads, head_dim, 8, window=params.get("window"))
    scales = distinct_scales(kv_heads)
    k8, v8 = hand_quantize(case.k, scales[0]), hand_quantize(case.v, scales[1])
    slopes = torch.linspace(0.05, 0.6, q_heads, device=DEVICE) if params.get("alibi") else None
    plain = AttentionParams(case.scale, params.get("window"), slopes, params.get("logit_softcap"))
    fp8 = AttentionParams(case.scale, params.get("window"), slopes, params.get("logit_softcap"), kv_scales=scales)
    q = case.q.float()
    got = ref_attention.paged_attention(q, k8, v8, case.batch, fp8)
    want = ref_attention.paged_attention(q, hand_dequantize(k8, scales[0]), hand_dequantize(v8, scales[1]),
                                         case.batch, plain)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


WRITE_SHAPES = by_device([(5, 4, 2, 64, 64), (3, 4, 1, 80, 32), (4, 2, 2, 128, 0)],
                         [(4096, 32, 8, 128, 128), (1, 32, 8, 128, 128), (64, 8, 1, 256, 256)])


@pytest.mark.parametrize("tokens, q_heads, kv_heads, dim, rotary_dim", WRITE_SHAPES)
def test_triton_write_stores_the_references_bytes(tokens, q_heads, kv_heads, dim, rotary_dim):
    q, k, v = qkv(tokens, q_heads, kv_heads, dim, seed=tokens)
    theta = torch.randn((tokens, rotary_dim // 2), device=DEVICE) * 3
    cos, sin = ((torch.cat((f, f), dim=-1).to(DTYPE) for f in (theta.cos(), theta.sin())) if rotary_dim
                else (None, None))
    scales = distinct_scales(kv_heads)
    block_size = 16
    blocks = tokens // block_size + 3
    slots = torch.randperm(blocks * block_size, generator=torch.Generator().manual_seed(3))[:tokens].to(DEVICE)
    got_caches, want_caches = empty_caches(blocks, block_size, kv_heads, dim), empty_caches(blocks, block_size,
                                                                                            kv_heads, dim)
    got_q = triton_rotary.rotary_write_kv(q, k, v, cos, sin, rotary_dim, *got_caches, slots, scales)
    want_q = ref_rotary.rotary_write_kv(q, k, v, cos, sin, rotary_dim, *want_caches, slots, scales)
    torch.testing.assert_close(got_q, want_q, atol=0, rtol=0)
    for got, want in zip(got_caches, want_caches):
        assert torch.equal(got.view(torch.uint8), want.view(torch.uint8))


def fp8_case(params: dict, seed: int, q_dtype: torch.dtype = DTYPE, v_slot_major: bool = False,
             block_size: int | None = None, **layout_options):
    """A Triton attention case over FP8 caches: the kernel's poisoned outside the visible keys (NaN), the
    reference's clean, both given the queries in ``q_dtype``; (got, want). ``v_slot_major``: the kernel's
    value cache stored along its slots (``slot_major``)."""
    q_heads, kv_heads, head_dim = LLAMA_HEADS
    case = make_case(layout(seed, **layout_options), q_heads, kv_heads, head_dim, block_size or by_device(8, 16),
                     window=params.get("window"))
    scales = distinct_scales(kv_heads)
    slopes = torch.linspace(0.05, 0.6, q_heads, device=DEVICE) if params.get("alibi") else None
    attention_params = AttentionParams(case.scale, params.get("window"), slopes, params.get("logit_softcap"),
                                       kv_scales=scales)
    k8, v8 = hand_quantize(case.k_poisoned, scales[0]), hand_quantize(case.v_poisoned, scales[1])
    if v_slot_major:
        v8 = slot_major(v8)
    op = triton_attention.TritonAttention({**TILES, **params.get("config", {})})
    q = case.q.to(q_dtype)
    got = op(q, k8, v8, case.poisoned_batch(), attention_params)
    clean_k8, clean_v8 = hand_quantize(case.k, scales[0]), hand_quantize(case.v, scales[1])
    want = ref_attention.paged_attention(q.float(), clean_k8, clean_v8, case.batch, attention_params)
    return got, want


FP8_ATTENTION = {"plain": dict(), "window": dict(window=by_device(5, 256)), "softcap": dict(logit_softcap=2.0),
                 "alibi": dict(alibi=True), "split-decodes": dict(config=dict(decode_splits=2)),
                 "narrow-fp8-tiles": dict(config=dict(decode_fp8_block_n_scale=1))}


@pytest.mark.parametrize("name", list(FP8_ATTENTION))
def test_triton_attention_over_fp8_matches_reference(name):
    got, want = fp8_case(FP8_ATTENTION[name], seed=len(name), **MIXED)
    torch.testing.assert_close(got.float(), want, **TOLERANCE)


@pytest.mark.parametrize("config", sorted(triton_attention.CONFIGS))
def test_every_launch_config_over_fp8_matches_reference(config):
    """Each named config whole (its own tiles, warps and stages: what kernel_bench_attention times), so that
    every one also reaches the sm_90 compile check (tests/kernels/test_compiles_for_gpu.py)."""
    params = dict(config=dict(triton_attention.CONFIGS[config]))
    got, want = fp8_case(params, seed=len(config), **MIXED)
    torch.testing.assert_close(got.float(), want, **TOLERANCE)


@pytest.mark.parametrize("q_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["plain", "softcap", "split-decodes"])
def test_16_bit_queries_over_fp8_take_float16_products(name, q_dtype):
    """16-bit queries over an FP8 cache multiply in float16, the score scale folded into the queries (the
    module's docstring says why): held to the float32 reference at 16-bit tolerance, on the CPU too (where
    the other cases run float32 queries and never take that path)."""
    got, want = fp8_case(FP8_ATTENTION[name], seed=3 + len(name), q_dtype=q_dtype, **MIXED)
    assert got.dtype == q_dtype
    torch.testing.assert_close(got.float(), want, atol=1.5e-2, rtol=1e-2)


def test_triton_refuses_fp8_cache_without_scales():
    q, k, v = qkv(2, 2, 1, 64)
    caches = empty_caches(2, 4, 1, 64)
    with pytest.raises(ValueError, match="FP8 KV cache needs kv_scales"):
        triton_rotary.rotary_write_kv(q, k, v, None, None, 0, *caches, torch.arange(2, device=DEVICE))


def test_scales_for_a_16_bit_cache_are_refused():
    q, k, v = qkv(2, 2, 1, 64)
    caches = [torch.zeros(2, 4, 1, 64, dtype=DTYPE, device=DEVICE) for _ in range(2)]
    with pytest.raises(ValueError, match="float8_e4m3fn cache only"):
        ref_rotary.rotary_write_kv(q, k, v, None, None, 0, *caches, torch.arange(2, device=DEVICE),
                                   distinct_scales(1))


def test_the_default_doubles_the_decode_key_tiles_on_an_fp8_cache_only():
    cfg = triton_attention.CONFIGS["default"]
    assert triton_attention._decode_block_n(cfg, "", {"FP8_KV": True}) == 2 * cfg["decode_block_n"] == 128
    assert triton_attention._decode_block_n(cfg, "_large_d", {"FP8_KV": True}) == 2 * cfg["decode_block_n_large_d"]
    assert triton_attention._decode_block_n(cfg, "", {"FP8_KV": False}) == cfg["decode_block_n"]
    narrow = triton_attention.CONFIGS["fp8_narrow"]
    assert triton_attention._decode_block_n(narrow, "", {"FP8_KV": True}) == narrow["decode_block_n"]


@pytest.mark.parametrize("config, fp8, stages", [("default", True, 4), ("default", False, 3),
                                                 ("fp8_stages3", True, 3), ("small_tiles", False, 4)])
def test_an_fp8_caches_decode_takes_its_own_stages(monkeypatch, config, fp8, stages):
    """``decode_fp8_stages`` (4, measured faster on the H200) on an FP8 cache, ``decode_stages`` on a 16-bit one:
    the decode kernel's NUM_STAGES as launched, recorded by a stand-in for the kernel."""
    launched = []

    class Recorder:
        def __getitem__(self, grid):
            return lambda *args, **meta: launched.append(meta["NUM_STAGES"])

    monkeypatch.setattr(triton_attention, "_decode_kernel", Recorder())
    params = dict(config=dict(triton_attention.CONFIGS[config]))
    if fp8:
        fp8_case(params, seed=1, **MIXED)
    else:
        q_heads, kv_heads, head_dim = LLAMA_HEADS
        case = make_case(layout(1, **MIXED), q_heads, kv_heads, head_dim, by_device(8, 16))
        op = triton_attention.TritonAttention(params["config"])
        op(case.q, case.k, case.v, case.batch, AttentionParams(case.scale))
    assert launched == [stages]


def slot_major(cache: torch.Tensor) -> torch.Tensor:
    """The same values stored [block, head, feature, slot], behind the [block, slot, head, feature] view the
    ops take (the FP8 cache's value plane when the kernels read it so)."""
    blocks, block_size, heads, dim = cache.shape
    stored = torch.zeros((blocks, heads, dim, block_size), dtype=torch.uint8, device=cache.device)
    view = stored.permute(0, 3, 1, 2)
    view.copy_(cache.view(torch.uint8))
    return view.view(cache.dtype)


@pytest.mark.parametrize("tokens, q_heads, kv_heads, dim, rotary_dim", WRITE_SHAPES[:2])
def test_writes_into_a_slot_major_value_cache_store_the_same_values(tokens, q_heads, kv_heads, dim, rotary_dim):
    """Both packages' writes into a value cache stored along its slots give the values (bytes) the
    reference writes into the plain layout, at the same logical places, and leave the rest zero."""
    q, k, v = qkv(tokens, q_heads, kv_heads, dim, seed=tokens + 1)
    theta = torch.randn((tokens, rotary_dim // 2), device=DEVICE) * 3
    cos, sin = (torch.cat((f, f), dim=-1).to(DTYPE) for f in (theta.cos(), theta.sin()))
    scales, block_size = distinct_scales(kv_heads), 16
    blocks = tokens // block_size + 3
    slots = torch.randperm(blocks * block_size, generator=torch.Generator().manual_seed(4))[:tokens].to(DEVICE)
    want_k, want_v = empty_caches(blocks, block_size, kv_heads, dim)
    ref_rotary.rotary_write_kv(q, k, v, cos, sin, rotary_dim, want_k, want_v, slots, scales)
    for package in (ref_rotary, triton_rotary):
        got_k, got_v = empty_caches(blocks, block_size, kv_heads, dim)
        got_v = slot_major(got_v)
        assert got_v.stride(1) == 1
        package.rotary_write_kv(q, k, v, cos, sin, rotary_dim, got_k, got_v, slots, scales)
        assert torch.equal(got_k.view(torch.uint8), want_k.view(torch.uint8))
        assert torch.equal(got_v.view(torch.uint8), want_v.view(torch.uint8))


@pytest.mark.parametrize("q_dtype", [DTYPE, torch.float16])
@pytest.mark.parametrize("name", ["plain", "window", "split-decodes"])
def test_attention_reads_a_slot_major_value_cache(name, q_dtype):
    """The Triton attention over a value cache stored along its slots (the V scale then applied at the
    output only) against the reference over the plain layout; float16 queries take the float16 products."""
    got, want = fp8_case(FP8_ATTENTION[name], seed=7 + len(name), q_dtype=q_dtype, v_slot_major=True, **MIXED)
    tolerance = TOLERANCE if q_dtype == DTYPE else dict(atol=1.5e-2, rtol=1e-2)
    torch.testing.assert_close(got.float(), want, **tolerance)


def test_slot_major_values_load_as_vectors_only_where_their_runs_are_aligned():
    """The kernels take a slot-major value cache's slots 16 at a time (one vector) only where the block size,
    every stride but the slot's and the start are multiples of 16 bytes; otherwise a slot at a time."""
    plain = empty_caches(3, 16, 2, 32)[1]
    assert triton_attention._value_layout(plain) == 0
    assert triton_attention._value_layout(slot_major(plain)) == triton_attention.SLOTS_IN_RUNS
    assert triton_attention._value_layout(slot_major(empty_caches(3, 8, 2, 32)[1])) == 1
    shifted = torch.zeros(3 * 2 * 32 * 16 + 1, dtype=torch.uint8, device=DEVICE)[1:]
    view = shifted.view(3, 2, 32, 16).permute(0, 3, 1, 2).view(FP8)
    assert triton_attention.values_along_slots(view) and triton_attention._value_layout(view) == 1


@pytest.mark.parametrize("name", ["plain", "split-decodes", "window"])
def test_attention_reads_slot_major_values_in_aligned_runs(name):
    """Blocks of 16 slots: the values load 16 slots a vector, tiles start on multiples of 16 keys (a sliding
    window's first tile does not, and loads a slot at a time); on the GPU a wrong claim reads wrong values."""
    got, want = fp8_case(FP8_ATTENTION[name], seed=11 + len(name), v_slot_major=True, block_size=16, **MIXED)
    torch.testing.assert_close(got.float(), want, **TOLERANCE)
