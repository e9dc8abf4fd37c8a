"""The OpenAI routes' log-probability shapes, from a ``Response``'s entries (``{"token", "token_id",
"logprob", "top": [...]}`` per token; a prompt's list starts with None, as nothing precedes its first token).

``Scoring`` holds what a request asked: ``logprobs`` (alternatives per token), ``echo`` (the prompt's
tokens first: completions only), ``score_only`` (``max_tokens=0`` with echo: the engine generates its one
token, which the answer leaves out) and vLLM's ``prompt_logprobs``. The first prompt token's text comes
from the deployment's tokenizer (the ids alone are in the response), decoded alone as every logprob token.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

Entry = dict[str, Any]


@dataclass
class Scoring:
    logprobs: Optional[int] = None
    echo: bool = False
    score_only: bool = False
    prompt_logprobs: Optional[int] = None
    decode: Optional[Callable[[list[int]], str]] = None  # the tokenizer's decode, where echo or scoring needs it
    echo_texts: list[str] = field(default_factory=list)  # per prompt, where score_only: the text echoed

    def engine_prompt_logprobs(self) -> Optional[int]:
        """The alternatives the engine scores per prompt token: for echoed logprobs and vLLM's field alike."""
        asked = [k for k in (self.logprobs if self.echo else None, self.prompt_logprobs) if k is not None]
        return max(asked) if asked else None

    def prompt_entries(self, prompt_logprobs: list[Optional[Entry]], prompt_ids: list[int]) -> list[Entry]:
        """The prompt's entries, its first token's too (its logprob and alternatives None)."""
        first = {"token": self.decode([prompt_ids[0]]), "token_id": prompt_ids[0], "logprob": None, "top": None}
        return [first, *prompt_logprobs[1:]]


def completion_logprobs(entries: list[Entry], k: int, offset: int = 0) -> tuple[dict[str, Any], int]:
    """The legacy completions shape of ``entries`` (each top_logprobs dict also holds the chosen token, as
    vLLM's; None for a token with no logprob), text offsets counted from ``offset``; and the offset after."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry["token"])
    tops = [None if e["top"] is None else {**{t["token"]: t["logprob"] for t in e["top"][:k]}, e["token"]: e["logprob"]}
            for e in entries]
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": tops, "text_offset": offsets}, offset


def chat_logprobs(entries: list[Entry], k: int) -> dict[str, Any]:
    """The chat shape: per token its text, logprob, UTF-8 bytes and top alternatives."""
    def token(item: Entry) -> dict[str, Any]:
        return {"token": item["token"], "logprob": item["logprob"], "bytes": list(item["token"].encode("utf-8"))}

    return {"content": [{**token(e), "top_logprobs": [token(t) for t in e["top"][:k]]} for e in entries]}


def vllm_prompt_logprobs(prompt_logprobs: list[Optional[Entry]], k: int) -> list[Optional[dict[str, Any]]]:
    """vLLM's ``prompt_logprobs``: None for the first token, then per token ``{token_id: {logprob, rank,
    decoded_token}}`` of the prompt's token and its ``k`` alternatives (rank: place among them, 1 the most
    likely; None for a prompt token outside them, whose rank is not computed)."""
    shaped: list[Optional[dict[str, Any]]] = [None]
    for entry in prompt_logprobs[1:]:
        tops = entry["top"][:k]
        ranks = {t["token_id"]: place for place, t in enumerate(tops, start=1)}
        chosen = {str(entry["token_id"]): {"logprob": entry["logprob"], "rank": ranks.get(entry["token_id"]),
                                           "decoded_token": entry["token"]}}
        shaped.append({**{str(t["token_id"]): {"logprob": t["logprob"], "rank": ranks[t["token_id"]],
                                               "decoded_token": t["token"]} for t in tops}, **chosen})
    return shaped
