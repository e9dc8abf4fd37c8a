"""One step's flat ragged batch: every scheduled token in one tensor, plus per-sequence metadata.

Built on the host from plain lists (one pass over the step's sequences, which is scheduling work, not
model work), then copied to the device in a few transfers. The model's forward never loops over
sequences: it reads these tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch


@dataclass(slots=True)
class RaggedBatch:
    token_ids: torch.Tensor        # [T] int64, the new tokens of every sequence, back to back
    positions: torch.Tensor        # [T] int64, each token's position in its sequence
    slot_mapping: torch.Tensor     # [T] int64, flat KV slot (block * block_size + offset) of each token
    query_start: torch.Tensor      # [S + 1] int64, where each sequence's tokens start in token_ids
    query_lens: torch.Tensor       # [S] int64, new tokens per sequence
    context_lens: torch.Tensor     # [S] int64, cached tokens per sequence after this step
    prompt_lens: torch.Tensor      # [S] int64, each sequence's prompt length, fixed when it was admitted (a
                                   # family's own module may depend on it; most ignore it)
    block_tables: torch.Tensor     # [S, max_blocks] int64, padded with 0 (masked by context_lens)
    last_token_index: torch.Tensor  # [S] int64, index in token_ids of each sequence's last new token
    logit_index: torch.Tensor      # [R] int64, the tokens whose logits the forward returns, in order: each
                                   # sequence's last new token, or all its new tokens where it scores its
                                   # prompt (then R > S); the same tensor as last_token_index when none does
    decode_seqs: torch.Tensor      # [S_d] int64, sequences with exactly one new token
    prefill_seqs: torch.Tensor     # [S_p] int64, sequences with several new tokens (prompt chunks)
    max_query_len: int
    max_context_len: int
    max_prefill_context_len: int
    block_size: int

    @property
    def num_seqs(self) -> int:
        return self.query_lens.shape[0]


def _slots(block_table: Sequence[int], start: int, count: int, block_size: int) -> list[int]:
    return [block_table[p // block_size] * block_size + p % block_size for p in range(start, start + count)]


def _one_transfer(fields: dict[str, list[int]], device: torch.device) -> dict[str, torch.Tensor]:
    """Packs every int64 field into one host tensor so a step costs one host→device copy.

    Each field starts on a 16-byte boundary (fields padded to an even length): Triton specialises a
    kernel on whether each pointer it gets is 16-byte aligned, so fields at offsets that moved with the
    step's token count made new kernel variants compile in the middle of a workload."""
    sizes = [len(values) for values in fields.values()]
    padded = [n + n % 2 for n in sizes]
    flat: list[int] = []
    for values, width in zip(fields.values(), padded):
        flat.extend(values)
        flat.extend([0] * (width - len(values)))
    host = torch.tensor(flat, dtype=torch.int64)
    if device.type == "cuda":
        host = host.pin_memory().to(device, non_blocking=True)
    return {name: part[:n] for name, part, n in zip(fields, host.split(padded), sizes)}


def logit_rows(query_lens: Sequence[int], full_logits: Sequence[bool] = ()) -> tuple[list[int], list[int]]:
    """(the token indices whose logits a step returns, each sequence's row among them for its last token):
    sequence i gives its last token, or all ``query_lens[i]`` tokens where ``full_logits[i]``."""
    index, last_rows, start = [], [], 0
    for i, count in enumerate(query_lens):
        first = start if full_logits and full_logits[i] else start + count - 1
        index.extend(range(first, start + count))
        last_rows.append(len(index) - 1)
        start += count
    return index, last_rows


def build_ragged_batch(token_lists: Sequence[Sequence[int]], cached: Sequence[int],
                       block_tables: Sequence[Sequence[int]], block_size: int,
                       device: torch.device, prompt_lens: Optional[Sequence[int]] = None,
                       full_logits: Sequence[bool] = ()) -> RaggedBatch:
    """``token_lists[i]`` are sequence i's new tokens; ``cached[i]`` how many it already cached;
    ``prompt_lens[i]`` its prompt length (default: its length after this step); ``full_logits[i]``:
    the logits of all its new tokens are wanted, not only of its last (empty: no sequence's)."""
    tokens, positions, slots, query_start = [], [], [], [0]
    for new, seen, table in zip(token_lists, cached, block_tables):
        tokens.extend(new)
        positions.extend(range(seen, seen + len(new)))
        slots.extend(_slots(table, seen, len(new), block_size))
        query_start.append(query_start[-1] + len(new))
    query_lens = [len(t) for t in token_lists]
    context_lens = [seen + n for seen, n in zip(cached, query_lens)]
    width = max(len(t) for t in block_tables)
    padded_tables = [list(t) + [0] * (width - len(t)) for t in block_tables]
    prefill = [i for i, n in enumerate(query_lens) if n > 1]
    fields = {
        "token_ids": tokens, "positions": positions, "slot_mapping": slots, "query_start": query_start,
        "query_lens": query_lens, "context_lens": context_lens,
        "prompt_lens": list(prompt_lens) if prompt_lens is not None else context_lens,
        "block_tables": [b for table in padded_tables for b in table],
        "last_token_index": [s - 1 for s in query_start[1:]],
        "decode_seqs": [i for i, n in enumerate(query_lens) if n == 1], "prefill_seqs": prefill,
    }
    if any(full_logits):
        fields["logit_index"] = logit_rows(query_lens, full_logits)[0]
    on_device = _one_transfer(fields, device)
    on_device["block_tables"] = on_device["block_tables"].view(len(token_lists), width)
    on_device.setdefault("logit_index", on_device["last_token_index"])
    return RaggedBatch(
        **on_device,
        max_query_len=max(query_lens), max_context_len=max(context_lens),
        max_prefill_context_len=max((context_lens[i] for i in prefill), default=0),
        block_size=block_size,
    )
