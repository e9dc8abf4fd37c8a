"""The seam between the generation loop and whatever picks tokens: ``TokenSampler`` (``Sampler`` on one
rank, ``RankZeroSampler`` under tensor parallelism) and ``SequenceForSampling``, what sampling and stop
checks read from a sequence in flight (``mii_core.scheduler.Sequence`` has all of it), so that sampling
does not depend on the scheduler."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Protocol, Sequence, runtime_checkable

import torch

from mii_core.config.generation import GenerationConfig

if TYPE_CHECKING:
    from mii_core.sampling.logprobs import TokenLogprob


class SequenceForSampling(Protocol):
    options: GenerationConfig  # the request's generation options
    prompt_ids: list[int]  # the prompt's tokens (repetition_penalty reads them)
    bad_words_ids: list[list[int]]  # options.bad_words as token sequences (sampling/bad_words.py)
    generated_ids: list[int]  # tokens sampled so far (those the host has read)
    max_new_tokens: int
    generator: Optional[torch.Generator]  # the request's own RNG when it gave a seed
    text_checked: int  # characters of generated text already searched for stop strings (StopChecker's)
    stop_cut: Optional[int]  # where a stop string begins in the generated text (StopChecker's)
    # its structured-output matcher (mii_core.sampling.grammar.GrammarState) when its options give a guide
    grammar: Optional[Any]


@runtime_checkable
class TokenSampler(Protocol):
    def __call__(self, logits: torch.Tensor, seqs: Sequence[SequenceForSampling]) -> list[int]:
        """The next token of each sequence: ``logits`` [len(seqs), vocab], one row per sequence, in order."""
        ...

    def all_greedy(self, seqs: Sequence[SequenceForSampling], unread: int = 0) -> bool:
        """Whether every sequence's next token is plain argmax, so that the loop may pick it on the device
        without calling the sampler. ``unread``: tokens each sequence sampled that are not in
        ``generated_ids`` yet."""
        ...

    def logprobs(self, logits: torch.Tensor, seqs: Sequence[SequenceForSampling],
                 tokens: Sequence[int]) -> list[Optional["TokenLogprob"]]:
        """Per sequence, the chosen token's log-probability and top alternatives where its options ask
        (``options.logprobs``), else None (:func:`mii_core.sampling.logprobs.step_logprobs`)."""
        ...
