"""The prompts of a legacy text-generation query (``{"query": str | [str, ...]}``), for both of its engines."""
from __future__ import annotations

from typing import Any, Mapping

from mii_core.legacy.task import QueryError


def query_prompts(query: Any) -> list[str]:
    """The query's prompts as a list; a missing key or a prompt that is not a non-empty string is its error."""
    if not isinstance(query, Mapping) or "query" not in query:
        raise QueryError(f"the text-generation query has no 'query' key (it needs 'query'; got "
                         f"{sorted(query) if isinstance(query, Mapping) else type(query).__name__})")
    prompts = query["query"]
    prompts = [prompts] if isinstance(prompts, str) else prompts
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise QueryError(f"the text-generation query's 'query' must be a non-empty string or a list of them, "
                         f"got {query['query']!r}"[:300])
    return list(prompts)


class TextAnswers:
    """What a text-generation deployment adds for serving: its queries hold no images, its answers (texts)
    are plain data already."""

    def remote_query(self, query: Any) -> Any:
        query_prompts(query)
        return query

    def to_plain(self, response: Any) -> Any:
        return response
