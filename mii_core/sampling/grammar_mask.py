"""The grammar rows' token masks of one step: filled on the host from each sequence's matcher, then
applied to the logits in one ``masked_fill`` over those rows.

The bitmask is filled before anything waits for the device, so on a GPU the host does it while the
step's forward pass still runs (the sampler is called right after the forward is launched)."""
from __future__ import annotations

from typing import Optional, Sequence as Seq

import torch

from mii_core.sampling.protocol import SequenceForSampling

BITS = 32  # xgrammar's bitmask: int32 words, bit j of word w allows token 32 * w + j


def has_grammar(seq: SequenceForSampling) -> bool:
    # getattr: a caller's own sequence type from before structured output has no matcher field
    return getattr(seq, "grammar", None) is not None


def grammar_rows(seqs: Seq[SequenceForSampling]) -> list[int]:
    return [row for row, seq in enumerate(seqs) if has_grammar(seq)]


def fill_bitmask(seqs: Seq[SequenceForSampling], rows: list[int], vocab: int) -> Optional[torch.Tensor]:
    """[len(rows), ceil(vocab / 32)] int32 on the host: each grammar row's allowed next tokens."""
    if not rows:
        return None
    bitmask = torch.full((len(rows), (vocab + BITS - 1) // BITS), -1, dtype=torch.int32)
    for position, row in enumerate(rows):
        seq = seqs[row]
        seq.grammar.catch_up(seq.generated_ids)
        seq.grammar.fill(bitmask, position)
    return bitmask


def apply_bitmask(out: torch.Tensor, rows: list[int], bitmask: Optional[torch.Tensor]) -> None:
    """Bars, in place, every token of ``rows`` that its bitmask row does not allow."""
    if bitmask is None:
        return
    device, vocab = out.device, out.shape[1]
    if device.type == "cuda":
        bitmask = bitmask.pin_memory().to(device, non_blocking=True)
    else:
        bitmask = bitmask.to(device)
    shifts = torch.arange(BITS, device=device, dtype=torch.int32)
    allowed = ((bitmask[:, :, None] >> shifts) & 1).bool().reshape(len(rows), -1)[:, :vocab]
    index = torch.tensor(rows, device=device)
    out[index] = out[index].masked_fill(~allowed, float("-inf"))
