"""What the scheduler hands the model runner each step: a frozen plan of which sequences compute which
tokens over which KV blocks (vLLM's ``SchedulerOutput``, in small)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from mii_core.scheduler.sequence import Sequence as Request


@dataclass(frozen=True, slots=True)
class StepPlan:
    """Row i computes ``token_lists[i]`` for ``uids[i]``, whose first ``cached[i]`` tokens are in the KV
    cache already (so its new tokens sit at positions ``cached[i]`` onwards) in the blocks of
    ``block_tables[i]``; ``prompt_lens[i]`` is the prompt length it was admitted with. The block tables
    are the KV manager's own lists, not copies: a plan is read before the scheduler is called again."""

    uids: tuple[int, ...] = ()
    token_lists: tuple[Sequence[int], ...] = ()
    cached: tuple[int, ...] = ()
    block_tables: tuple[list[int], ...] = ()
    prompt_lens: tuple[int, ...] = ()
    seqs: tuple["Request", ...] = ()  # the scheduler's records of the rows (none for an explicit put)
    preempted: tuple["Request", ...] = ()  # sequences whose blocks were freed to make this plan
    # per row, whether every new token needs its logits (a sequence scoring its prompt), not just the
    # last; empty when no row does (the usual case: the runner then gathers one row per sequence)
    full_logits: tuple[bool, ...] = ()

    def __len__(self) -> int:
        return len(self.uids)

    @property
    def num_tokens(self) -> list[int]:
        return [len(tokens) for tokens in self.token_lists]

    @property
    def all_decodes(self) -> bool:
        return all(len(tokens) == 1 for tokens in self.token_lists)
