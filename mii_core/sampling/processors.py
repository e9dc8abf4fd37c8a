"""vLLM's logits processors, batched on the logits' device over the rows that use them.

First, as vLLM v1, the structured-output grammar masks (:mod:`mii_core.sampling.grammar_mask`); then, in
vLLM v1's order: ``allowed_token_ids`` (every other token barred), ``bad_words`` (the last token of a
banned sequence whose other tokens end the output), ``min_tokens`` (EOS and ``stop_token_ids`` barred until
that many tokens were generated), ``logit_bias`` (added), then the penalties: ``repetition_penalty`` (HF's
definition over prompt + output: a seen token's logit divided by it when positive, multiplied when not),
``frequency_penalty`` (minus it times the token's count in the output) and ``presence_penalty`` (minus it
once for a token the output holds), OpenAI's formula. Per-step tensors are built only for the rows that
need them (token counts by one ``scatter_add`` over padded id lists, biases by one sparse index/value add),
never by Python over the vocabulary; a step where no row uses any processor costs one scan of the options.
``min_p``, ``top_k`` and ``top_p`` do not change the argmax and live in :mod:`mii_core.sampling.filters`.
"""
from __future__ import annotations

from typing import Sequence as Seq

import torch

from mii_core.sampling.grammar_mask import apply_bitmask, fill_bitmask, grammar_rows, has_grammar
from mii_core.sampling.protocol import SequenceForSampling

NEG_INF = float("-inf")


class LogitsProcessors:
    """The processors of one rank's sampler; ``eos_ids``: the model's EOS ids within its vocabulary."""

    def __init__(self, eos_ids: Seq[int]) -> None:
        self.eos_ids = list(eos_ids)

    def changes_argmax(self, seq: SequenceForSampling, unread: int = 0) -> bool:
        """Whether a processor may change ``seq``'s best token next step (``unread``: tokens sampled that
        are not in ``generated_ids`` yet)."""
        return (seq.options.changes_logits or has_grammar(seq)
                or self.barred_from_stopping(seq, unread))

    def barred_from_stopping(self, seq: SequenceForSampling, unread: int = 0) -> bool:
        """min_new_tokens (vLLM's min_tokens): no stop token before that many tokens were generated."""
        options = seq.options
        return (len(seq.generated_ids) + unread < options.min_new_tokens
                and bool(options.stop_token_ids or (self.eos_ids and not options.ignore_eos)))

    def stop_token_ids(self, seq: SequenceForSampling) -> list[int]:
        """The tokens that end ``seq``: its stop_token_ids, and EOS unless it ignores EOS."""
        options = seq.options
        return options.stop_token_ids + ([] if options.ignore_eos else self.eos_ids)

    def __call__(self, logits: torch.Tensor, seqs: Seq[SequenceForSampling]) -> torch.Tensor:
        """``logits`` [len(seqs), vocab] itself when no row uses a processor, else a processed float32 copy
        (the raw logits stay as they are: logprobs are computed from them)."""
        active = [row for row, seq in enumerate(seqs) if self.changes_argmax(seq)]
        if not active:
            return logits
        guided = grammar_rows(seqs)
        bitmask = fill_bitmask(seqs, guided, logits.shape[1])  # on the host, before anything waits for the device
        out = logits.float().clone()
        apply_bitmask(out, guided, bitmask)
        _allow_only(out, [(row, seqs[row].options.allowed_token_ids) for row in active
                          if seqs[row].options.allowed_token_ids is not None])
        _bar(out, [(row, token) for row in active for token in _banned_next(seqs[row])])
        _bar(out, [(row, token) for row in active if self.barred_from_stopping(seqs[row])
                   for token in self.stop_token_ids(seqs[row])])
        _add_bias(out, [(row, token, bias) for row in active if seqs[row].options.logit_bias
                        for token, bias in seqs[row].options.logit_bias.items()])
        _penalize(out, [row for row in active if seqs[row].options.penalized], seqs)
        return out


def _banned_next(seq: SequenceForSampling) -> list[int]:
    """vLLM's bad words: a word's last token is banned when its other tokens end the output so far."""
    generated = seq.generated_ids
    banned = []
    for word in seq.bad_words_ids:
        prefix = len(word) - 1
        if prefix == 0 or (prefix <= len(generated) and generated[len(generated) - prefix:] == list(word[:-1])):
            banned.append(word[-1])
    return banned


def _bar(out: torch.Tensor, pairs: list[tuple[int, int]]) -> None:
    if pairs:
        rows, tokens = zip(*pairs)
        out[torch.tensor(rows, device=out.device), torch.tensor(tokens, device=out.device)] = NEG_INF


def _add_bias(out: torch.Tensor, triples: list[tuple[int, int, float]]) -> None:
    if triples:
        rows, tokens, biases = zip(*triples)
        index = (torch.tensor(rows, device=out.device), torch.tensor(tokens, device=out.device))
        out.index_put_(index, torch.tensor(biases, device=out.device, dtype=out.dtype), accumulate=True)


def _allow_only(out: torch.Tensor, entries: list[tuple[int, list[int]]]) -> None:
    """Each row of ``entries`` keeps only its listed tokens (lists padded with their own first id)."""
    if not entries:
        return
    rows = torch.tensor([row for row, _ in entries], device=out.device)
    width = max(len(ids) for _, ids in entries)
    ids = torch.tensor([ids + [ids[0]] * (width - len(ids)) for _, ids in entries], device=out.device)
    allowed = torch.zeros(len(entries), out.shape[1], dtype=torch.bool, device=out.device).scatter_(1, ids, True)
    out[rows] = out[rows].masked_fill(~allowed, NEG_INF)


def token_counts(id_lists: list[list[int]], vocab: int, device: torch.device) -> torch.Tensor:
    """[len(id_lists), vocab] float32 counts of each token in each list: one scatter_add over the lists
    padded with ``vocab``, a spare column dropped afterwards."""
    width = max((len(ids) for ids in id_lists), default=0)
    padded = torch.tensor([ids + [vocab] * (width - len(ids)) for ids in id_lists], dtype=torch.int64,
                          device=device).reshape(len(id_lists), width)
    counts = torch.zeros(len(id_lists), vocab + 1, device=device)
    counts.scatter_add_(1, padded, torch.ones(padded.shape, device=device))
    return counts[:, :vocab]


def _penalize(out: torch.Tensor, rows: list[int], seqs: Seq[SequenceForSampling]) -> None:
    """Repetition (HF's, over prompt + output), then frequency and presence (OpenAI's, over the output)."""
    if not rows:
        return
    device, vocab = out.device, out.shape[1]
    options = [seqs[row].options for row in rows]
    index = torch.tensor(rows, device=device)
    logits = out[index]
    output_counts = token_counts([seqs[row].generated_ids for row in rows], vocab, device)
    repeating = [opt.repetition_penalty != 1 for opt in options]
    if any(repeating):
        # the prompt is read only for the rows with a repetition penalty
        prompts = [seqs[row].prompt_ids if rep else [] for row, rep in zip(rows, repeating)]
        seen = (token_counts(prompts, vocab, device) + output_counts) > 0
        penalty = torch.tensor([opt.repetition_penalty for opt in options], device=device)[:, None]
        logits = torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)
    frequency = torch.tensor([opt.frequency_penalty for opt in options], device=device)[:, None]
    presence = torch.tensor([opt.presence_penalty for opt in options], device=device)[:, None]
    out[index] = logits - frequency * output_counts - presence * (output_counts > 0).float()
