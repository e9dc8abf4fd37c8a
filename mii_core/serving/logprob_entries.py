"""A sequence's log-probabilities as plain data (``Response.logprobs``): each token with its text.

A token's text is its id decoded alone (``tokenizer.decode([id])``), as vLLM shows logprob tokens; all
of a response's ids are decoded in one ``batch_decode`` call.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence


def logprob_entries(tokenizer: Any, logprobs: Optional[Sequence[Any]]) -> Optional[list[dict[str, Any]]]:
    """``TokenLogprob``s → ``[{"token", "token_id", "logprob", "top": [{"token", "token_id", "logprob"}]}]``."""
    if logprobs is None:
        return None
    ids = sorted({i for lp in logprobs for i in (lp.token_id, *lp.top_ids)})
    texts = dict(zip(ids, tokenizer.batch_decode([[i] for i in ids]))) if ids else {}
    return [{"token": texts[lp.token_id], "token_id": lp.token_id, "logprob": lp.logprob,
             "top": [{"token": texts[i], "token_id": i, "logprob": value}
                     for i, value in zip(lp.top_ids, lp.top_logprobs)]}
            for lp in logprobs]


def prompt_logprob_entries(tokenizer: Any,
                           logprobs: Optional[Sequence[Any]]) -> Optional[list[Optional[dict[str, Any]]]]:
    """A prompt's ``TokenLogprob``s (its second token onwards) → None for the first token, then the entries."""
    if logprobs is None:
        return None
    return [None, *logprob_entries(tokenizer, logprobs)]
