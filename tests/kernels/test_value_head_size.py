"""Values of another width than the keys in the KV cache, stored beside them or read as a view of the keys'
first features (a family's ``value_head_dim`` / ``value_in_key``: multi-head latent attention's latent):
the cache's layouts (``mii_core/kv_cache/cache.py``), the reference ops against attention worked out one
sequence at a time in plain PyTorch, and the Triton kernels against the reference (the interpreter without
CUDA: small shapes; with CUDA, DeepSeek-V2's 576-feature key over a 512-feature value, 16 and 128 heads).
"""
from __future__ import annotations

import random

import pytest
import torch

from mii_core.batch import build_ragged_batch
from mii_core.kv_cache import KVCache, KVCacheShape
from mii_core.model.ops import AttentionParams
from mii_kernels.torch_ref.attention import paged_attention as reference
from mii_kernels.torch_ref.rotary import rotary_write_kv as reference_write

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
DTYPE = torch.bfloat16 if CUDA else torch.float32
TOLERANCE = dict(atol=2e-2, rtol=2e-2) if CUDA else dict(atol=1e-5, rtol=1e-4)
BLOCK = 8
# (query heads, KV heads, key features, value features, value in key)
LAYOUTS = {
    "in-key": (4, 1, 24, 16, True),
    "beside-narrower": (4, 2, 32, 20, False),
    "beside-wider": (2, 2, 16, 40, False),
}
MLA = (16, 1, 576, 512, True)  # DeepSeek-V2's latent (512) and rope key (64), as one KV head


def cache_of(kv_heads, key_dim, value_dim, in_key, blocks, dtype=torch.float32, device=DEVICE) -> KVCache:
    shape = KVCacheShape(1, kv_heads, key_dim, BLOCK, dtype, value_head_dim=value_dim, value_in_key=in_key)
    return KVCache(shape, blocks, device)


@pytest.mark.parametrize("name", LAYOUTS)
def test_cache_sizes_and_views_by_hand(name):
    _, kv_heads, key_dim, value_dim, in_key = LAYOUTS[name]
    cache = cache_of(kv_heads, key_dim, value_dim, in_key, blocks=3, device=torch.device("cpu"))
    stored = key_dim if in_key else key_dim + value_dim
    assert cache.shape.bytes_per_token == kv_heads * stored * 4
    assert cache.data.numel() == 4 * BLOCK * kv_heads * stored  # 3 blocks + the scratch block
    keys, values = cache.layer(0)
    assert keys.shape == (4, BLOCK, kv_heads, key_dim) and values.shape == (4, BLOCK, kv_heads, value_dim)
    keys.fill_(1.0)
    values.fill_(2.0)
    if in_key:  # the value is the key's first features: the same memory
        assert keys[..., :value_dim].eq(2.0).all() and keys[..., value_dim:].eq(1.0).all()
    else:  # side by side, no overlap, nothing padded
        assert keys.eq(1.0).all() and cache.data.sum() == keys.numel() * 1.0 + values.numel() * 2.0


def test_equal_widths_keep_the_two_plane_layout():
    cache = cache_of(2, 16, 16, False, blocks=3, device=torch.device("cpu"))
    assert cache.data.shape == (1, 2, 4, BLOCK, 2, 16)
    assert cache.shape.bytes_per_token == 2 * 2 * 16 * 4


def test_value_in_key_wider_than_the_key_is_refused():
    with pytest.raises(ValueError, match="at least"):
        KVCacheShape(1, 1, 16, BLOCK, torch.float32, value_head_dim=20, value_in_key=True)


def make_case(layout, seqs, seed, dtype=DTYPE):
    """A cache of random keys (and values), a batch of (seen, new) sequences over shuffled blocks, and q."""
    q_heads, kv_heads, key_dim, value_dim, in_key = layout
    gen = torch.Generator(DEVICE).manual_seed(seed)
    blocks_per_seq = [-(-(seen + new) // BLOCK) for seen, new in seqs]
    num_blocks = sum(blocks_per_seq) + 2
    order = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(seed)).tolist()
    tables = [order[sum(blocks_per_seq[:i]):sum(blocks_per_seq[:i + 1])] for i in range(len(seqs))]
    cache = cache_of(kv_heads, key_dim, value_dim, in_key, num_blocks, dtype)
    keys, values = cache.layer(0)
    keys.copy_(torch.randn(keys.shape, generator=gen, device=DEVICE))
    if not in_key:
        values.copy_(torch.randn(values.shape, generator=gen, device=DEVICE))
    q = torch.randn((sum(new for _, new in seqs), q_heads, key_dim), generator=gen, device=DEVICE).to(dtype)
    batch = build_ragged_batch([[0] * new for _, new in seqs], [seen for seen, _ in seqs], tables, BLOCK, DEVICE)
    return q, keys, values, batch, tables


def by_sequence(q, keys, values, seqs, tables, scale):
    """Causal attention one sequence and one head at a time, the keys gathered slot by slot: no paging."""
    out, row = [], 0
    group = q.shape[1] // keys.shape[2]
    for (seen, new), table in zip(seqs, tables):
        slots = [(table[j // BLOCK], j % BLOCK) for j in range(seen + new)]
        k = torch.stack([keys[b, o] for b, o in slots]).float()        # [L, Hkv, D]
        v = torch.stack([values[b, o] for b, o in slots]).float()      # [L, Hkv, Dv]
        for i in range(new):
            heads = []
            for h in range(q.shape[1]):
                scores = (k[:seen + i + 1, h // group] @ q[row + i, h].float()) * scale
                heads.append(torch.softmax(scores, dim=0) @ v[:seen + i + 1, h // group])
            out.append(torch.stack(heads))
        row += new
    return torch.stack(out)


SEQS = [(0, 5), (9, 1), (3, 7), (20, 1)]  # prompt chunks with and without context, and decodes


@pytest.mark.parametrize("name", LAYOUTS)
def test_reference_matches_attention_worked_one_sequence_at_a_time(name):
    q, keys, values, batch, tables = make_case(LAYOUTS[name], SEQS, seed=1, dtype=torch.float32)
    scale = 0.3
    got = reference(q, keys, values, batch, AttentionParams(scale))
    assert got.shape == (q.shape[0], q.shape[1], values.shape[-1])
    torch.testing.assert_close(got.float(), by_sequence(q, keys, values, SEQS, tables, scale),
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layout", [LAYOUTS["in-key"], (4, 1, 576, 512, True)], ids=["in-key", "mla-in-key"])
def test_reference_write_with_no_value_writes_the_key_only(layout):
    """``v`` None: the key is written at its slot, the value view reads its first features, nothing else moves."""
    q_heads, kv_heads, key_dim, value_dim, _ = layout
    q, keys, values, batch, _ = make_case(layout, [(0, 3)], seed=2, dtype=torch.float32)
    before = keys.clone()
    k = torch.randn((3, kv_heads, key_dim), device=DEVICE)
    reference_write(q, k, None, None, None, 0, keys, values, batch.slot_mapping)
    slots = batch.slot_mapping.tolist()
    flat = keys.view(-1, kv_heads, key_dim)
    assert torch.equal(flat[slots], k)
    assert torch.equal(values.reshape(-1, kv_heads, value_dim)[slots], k[..., :value_dim])
    untouched = [s for s in range(flat.shape[0]) if s not in slots]
    assert torch.equal(flat[untouched], before.view(-1, kv_heads, key_dim)[untouched])


def triton_ops():
    pytest.importorskip("triton")
    from mii_kernels.triton.attention import TritonAttention
    from mii_kernels.triton.rotary import rotary_write_kv
    small = {} if CUDA else dict(prefill_block_m=16, prefill_block_n=16, decode_block_n=16,
                                 prefill_block_m_large_d=16, prefill_block_n_large_d=16, decode_block_n_large_d=16)
    return TritonAttention(small), rotary_write_kv


TRITON_LAYOUTS = {**LAYOUTS, "in-key-72-64": (4, 1, 72, 64, True),
                  # value tiles narrower than the key's: Triton on sm_90 got these wrong at 64-key tiles
                  # until the value tile was padded to the key's width (_value_tile)
                  "beside-24-16": (4, 1, 24, 16, False), "in-key-48-32": (4, 1, 48, 32, True),
                  # keys over 256 features, no power of two: two products (256 + a masked 64-wide tail)
                  "in-key-300-256": (4, 1, 300, 256, True), "beside-288-96": (4, 2, 288, 96, False),
                  # 576 / 512: huge heads (512 + 64); 32 query heads on one KV head take two programs of 16
                  "mla-16": MLA, "mla-32": (32, 1, 576, 512, True)}
TRITON_SEQS = {True: [(0, 40), (300, 1), (70, 30), (1000, 1)], False: [(0, 5), (9, 1), (3, 4), (20, 1)]}


@pytest.mark.parametrize("name", TRITON_LAYOUTS)
def test_triton_attention_matches_the_reference(name):
    layout = TRITON_LAYOUTS[name]
    seqs = TRITON_SEQS[CUDA]
    if not CUDA and layout[2] > 256:
        seqs = [(0, 3), (5, 1)]  # the interpreter on 1024-wide tiles: a few rows
    q, keys, values, batch, _ = make_case(layout, seqs, seed=3)
    params = AttentionParams(layout[2] ** -0.5)
    attend, _ = triton_ops()
    got = attend(q, keys, values, batch, params)
    assert got.shape == (q.shape[0], q.shape[1], layout[3]) and got.dtype == q.dtype
    want = reference(q.float(), keys.float(), values.float(), batch, params)
    torch.testing.assert_close(got.float(), want, **TOLERANCE)


@pytest.mark.parametrize("warps", [4, 8])
def test_triton_prefill_with_values_in_the_key_at_each_warp_count(warps):
    """4 warps read out of bounds on the H200 with the 24/16 latent layout before the value-tile padding."""
    pytest.importorskip("triton")
    from mii_kernels.triton.attention import TritonAttention

    layout = LAYOUTS["in-key"]
    q, keys, values, batch, _ = make_case(layout, TRITON_SEQS[CUDA], seed=5)
    params = AttentionParams(layout[2] ** -0.5)
    small = {} if CUDA else dict(prefill_block_m=16, prefill_block_n=16, decode_block_n=16)
    got = TritonAttention({**small, "prefill_warps": warps, "decode_warps": warps})(q, keys, values, batch, params)
    want = reference(q.float(), keys.float(), values.float(), batch, params)
    torch.testing.assert_close(got.float(), want, **TOLERANCE)


@pytest.mark.parametrize("splits", [2, 4])
def test_triton_split_decodes_with_values_in_the_key(splits):
    """Flash-decoding's partial outputs and their merge carry the value's width, not the key's."""
    layout = LAYOUTS["in-key"]
    seqs = [(random.Random(i).randint(10, 60), 1) for i in range(3)]
    q, keys, values, batch, _ = make_case(layout, seqs, seed=4)
    params = AttentionParams(0.25)
    attend = triton_ops()[0].__class__({"decode_splits": splits, "decode_block_n": 16})
    torch.testing.assert_close(attend(q, keys, values, batch, params).float(),
                               reference(q.float(), keys.float(), values.float(), batch, params), **TOLERANCE)


@pytest.mark.parametrize("name", ["in-key", "beside-wider"])
def test_triton_write_matches_the_reference(name):
    """Into a copy of the same cache: keys (and values beside them, or none with the value in the key)."""
    _, kv_heads, key_dim, value_dim, in_key = layout = LAYOUTS[name]
    q, keys, values, batch, _ = make_case(layout, [(0, 3), (4, 2)], seed=5)
    theirs = cache_of(kv_heads, key_dim, value_dim, in_key, keys.shape[0] - 1, DTYPE)
    ours = cache_of(kv_heads, key_dim, value_dim, in_key, keys.shape[0] - 1, DTYPE)
    gen = torch.Generator(DEVICE).manual_seed(6)
    for cache in (theirs, ours):
        cache.data.copy_(torch.randn(cache.data.shape, generator=torch.Generator(DEVICE).manual_seed(7),
                                     device=DEVICE))
    k = torch.randn((5, kv_heads, key_dim), generator=gen, device=DEVICE).to(DTYPE)
    v = None if in_key else torch.randn((5, kv_heads, value_dim), generator=gen, device=DEVICE).to(DTYPE)
    _, write = triton_ops()
    write(q, k, v, None, None, 0, *ours.layer(0), batch.slot_mapping)
    reference_write(q, k, v, None, None, 0, *theirs.layer(0), batch.slot_mapping)
    assert torch.equal(ours.data, theirs.data)
    assert torch.equal(ours.layer(0)[0].reshape(-1, kv_heads, key_dim)[batch.slot_mapping], k)


@pytest.mark.skipif(CUDA and torch.cuda.get_device_capability() < (8, 9), reason="FP8 needs sm_89 or newer")
@pytest.mark.parametrize("name", ["in-key", "mla-16"])
def test_triton_fp8_values_read_from_fp8_keys(name):
    """An e4m3 cache whose values are its keys' bytes: written by the Triton write (v None) with one scale, not
    a power of two, for K and V alike; read by the Triton attention as the reference reads it."""
    q_heads, kv_heads, key_dim, value_dim, in_key = layout = TRITON_LAYOUTS[name]
    seqs = [(0, 3), (5, 1)] if key_dim > 256 and not CUDA else [(0, 9), (20, 1), (4, 6)]
    q, _, _, batch, _ = make_case(layout, [(0, seen + new) for seen, new in seqs], seed=8)
    cache = cache_of(kv_heads, key_dim, value_dim, in_key, batch.block_tables.max().item() + 1,
                     torch.float8_e4m3fn)
    keys, values = cache.layer(0)
    k = torch.randn((q.shape[0], kv_heads, key_dim), generator=torch.Generator(DEVICE).manual_seed(9),
                    device=DEVICE).to(q.dtype)
    scales = torch.full((2, kv_heads), 0.37, device=DEVICE)
    attend, write = triton_ops()
    write(q, k, None, None, None, 0, keys, values, batch.slot_mapping, scales)  # every token's key, then attend
    params = AttentionParams(key_dim ** -0.5, kv_scales=scales)
    stored = keys.view(torch.uint8).view(-1, kv_heads, key_dim)[batch.slot_mapping].view(torch.float8_e4m3fn)
    assert torch.equal(stored.float(), (k.float() / 0.37).to(torch.float8_e4m3fn).float())
    decode_batch = build_ragged_batch([[0] * new for _, new in seqs], [seen for seen, _ in seqs],
                                      batch.block_tables.tolist(), BLOCK, DEVICE)
    rows = torch.cat([torch.arange(s, s + new) + seen for (seen, new), s in
                      zip(seqs, batch.query_start[:-1].tolist())]).to(DEVICE)
    got = attend(q[rows], keys, values, decode_batch, params)
    torch.testing.assert_close(got.float(), reference(q[rows].float(), keys, values, decode_batch,
                                                      AttentionParams(key_dim ** -0.5, kv_scales=scales)).float(),
                               **TOLERANCE)
