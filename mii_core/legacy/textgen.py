"""text-generation under ``mii_core.legacy`` when an architecture plugin serves the model type: MII Legacy's
query shape on top of the FastGen pipeline (its own continuous batching replaces the dynamic batcher)."""
from __future__ import annotations

import time
from typing import Any, Mapping

from mii_core.legacy.generation_query import TextAnswers, query_prompts
from mii_core.legacy.result import LegacyResult
from mii_core.pipeline import pipeline


class FastGenDeployment(TextAnswers):
    """``query({"query": str | [str, ...]}, **generation options)`` → the generated texts, one per prompt."""

    task = "text-generation"

    def __init__(self, name: str, model_dir: str, default_options: Mapping[str, Any]) -> None:
        self.name = name
        self.default_options = dict(default_options)
        self.pipe = pipeline(model_dir)

    def query(self, query: Mapping[str, Any], **options: Any) -> LegacyResult:
        start = time.perf_counter()
        prompts = query_prompts(query)
        options = {**self.default_options, **options}
        responses = self.pipe(prompts, **options)
        texts = [r.generated_text for r in responses]
        return LegacyResult(texts, time.perf_counter() - start)

    def terminate(self) -> None:
        self.pipe.destroy()
