"""Reference paged attention over the blocked KV cache (the new tokens' K/V are already written).

Vectorised with no loop over sequences: sequences are padded into two groups, single-token decodes
and multi-token prompt chunks, so a decode never pays for the longest chunk's padding.
"""
from __future__ import annotations

import torch

from mii_core.model.ops import AttentionParams, join_amax
from mii_kernels.torch_ref import fp8_kv


def _gather_queries(q, batch, seqs, max_q):
    offsets = torch.arange(max_q, device=q.device)
    query_lens = batch.query_lens[seqs]
    valid = offsets[None, :] < query_lens[:, None]                       # [G, max_q]
    token_index = torch.where(valid, batch.query_start[seqs][:, None] + offsets[None, :], 0)
    positions = (batch.context_lens[seqs] - query_lens)[:, None] + offsets[None, :]
    return q[token_index], token_index, valid, positions                # q: [G, max_q, Hq, D]


def _gather_cache(cache, batch, seqs, max_context, scales, dtype):
    blocks = -(-max_context // batch.block_size)
    tables = batch.block_tables[seqs, :blocks]                            # [G, blocks]
    gathered = cache[tables]                                              # [G, blocks, bs, Hkv, D]
    if scales is not None:  # an FP8 cache: the gathered keys or values only, back in q's dtype
        gathered = fp8_kv.dequantize(gathered, scales, dtype)
    return gathered.reshape(len(seqs), blocks * batch.block_size, *cache.shape[2:])


def _attend_group(out, q, k_cache, v_cache, batch, seqs, max_q, max_context, params):
    queries, token_index, valid, q_positions = _gather_queries(q, batch, seqs, max_q)
    k_scales, v_scales = params.kv_scales if params.kv_scales is not None else (None, None)
    keys = _gather_cache(k_cache, batch, seqs, max_context, k_scales, q.dtype)   # [G, L, Hkv, D]
    values = _gather_cache(v_cache, batch, seqs, max_context, v_scales, q.dtype)
    groups, length, kv_heads, dim = values.shape  # the output's features are the values' (Dv)
    per_kv = q.shape[1] // kv_heads
    # GQA without copying K/V: fold each KV head's query heads into the row axis
    q_rows = queries.view(groups, max_q, kv_heads, per_kv, q.shape[2]).permute(0, 2, 3, 1, 4)
    q_rows = q_rows.reshape(groups, kv_heads, per_kv * max_q, q.shape[2])
    key_positions = torch.arange(length, device=q.device)
    visible = (key_positions[None, None, :] <= q_positions[:, :, None]) & \
              (key_positions[None, None, :] < batch.context_lens[seqs][:, None, None])  # [G, max_q, L]
    if params.window is not None:
        visible &= q_positions[:, :, None] - key_positions[None, None, :] < params.window
    visible = visible[:, None, None].expand(groups, 1, per_kv, max_q, length).reshape(groups, 1, -1, length)
    k_rows, v_rows = keys.permute(0, 2, 1, 3), values.permute(0, 2, 1, 3)
    if params.logit_softcap is None and params.alibi_slopes is None:
        # K/V stay strided views of the gathered cache: a plain matmul would copy them into contiguous
        # batches first (that copy was 60% of a 256-sequence decode step on the H100); SDPA takes strides
        # and never materialises float32 scores
        attended = torch.nn.functional.scaled_dot_product_attention(q_rows, k_rows, v_rows, attn_mask=visible,
                                                                    scale=params.scale)
    else:  # a cap bends the scores, which SDPA cannot do, and a bias in a 16-bit mask loses digits on the
        # GPU's SDPA kernels: the scores in float32
        attended = _float32_attention(q_rows, k_rows, v_rows, visible, q_positions, key_positions, params,
                                      kv_heads, per_kv)
    attended = attended.view(groups, kv_heads, per_kv, max_q, dim).permute(0, 3, 1, 2, 4)
    attended = attended.reshape(groups, max_q, kv_heads * per_kv, dim)
    # padded query slots land in the spare last row of ``out``: a boolean-mask scatter would force a
    # device→host sync in every layer
    spare_row = out.shape[0] - 1
    rows = torch.where(valid, token_index, spare_row).reshape(-1)
    out.index_copy_(0, rows, attended.reshape(-1, *attended.shape[2:]))


def _alibi_bias(slopes, q_positions, key_positions, kv_heads, per_kv):
    """slope_h · (j - p) as float32 [G, Hkv, per_kv · max_q, L], rows ordered as ``q_rows``'."""
    distance = (key_positions[None, None, :] - q_positions[:, :, None]).float()      # [G, max_q, L]
    bias = slopes.float().view(1, kv_heads, per_kv, 1, 1) * distance[:, None, None]  # [G, Hkv, per_kv, max_q, L]
    return bias.reshape(distance.shape[0], kv_heads, -1, distance.shape[-1])


def _float32_attention(q_rows, k_rows, v_rows, visible, q_positions, key_positions, params, kv_heads, per_kv):
    scores = torch.matmul(q_rows.float(), k_rows.float().transpose(-1, -2)) * params.scale
    if params.logit_softcap is not None:
        scores = params.logit_softcap * torch.tanh(scores / params.logit_softcap)
    if params.alibi_slopes is not None:
        scores = scores + _alibi_bias(params.alibi_slopes, q_positions, key_positions, kv_heads, per_kv)
    probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
    return torch.matmul(probs, v_rows.float()).to(q_rows.dtype)


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, batch,
                    params: AttentionParams, amax: torch.Tensor | None = None) -> torch.Tensor:
    fp8_kv.check_scales(k_cache, params.kv_scales, "paged_attention")
    out = q.new_empty((q.shape[0] + 1, q.shape[1], v_cache.shape[-1]))  # + a spare row, see _attend_group
    if batch.decode_seqs.numel():
        _attend_group(out, q, k_cache, v_cache, batch, batch.decode_seqs, 1, batch.max_context_len, params)
    if batch.prefill_seqs.numel():
        _attend_group(out, q, k_cache, v_cache, batch, batch.prefill_seqs, batch.max_query_len,
                      batch.max_prefill_context_len, params)
    return out[:-1] if amax is None else join_amax(amax, out[:-1])


paged_attention.supports_fp8_kv_cache = True
paged_attention.joins_amax = True
paged_attention.reads_slot_major_values = True
