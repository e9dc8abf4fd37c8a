"""A non-persistent (in-process) legacy deployment: a task model behind a dynamic batcher."""
from __future__ import annotations

import time
from typing import Any, Mapping

from mii_core.legacy.batcher import DynamicBatcher
from mii_core.legacy.config import LegacyConfig
from mii_core.legacy.result import LegacyResult
from mii_core.legacy.task import TaskModel


class InProcessDeployment:
    """Answers ``query`` from any thread; concurrent queries share forward passes."""

    def __init__(self, name: str, model: TaskModel, config: LegacyConfig) -> None:
        self.name = name
        self.task = model.task
        self.model = model
        self.default_options = dict(config.pipeline_kwargs)
        model.check_options(self.default_options)
        if config.enable_cuda_graph:
            model.enable_cuda_graph()
        self.batcher = DynamicBatcher(model, max_batch_size=config.max_batch_size,
                                      wait_s=config.batch_wait_ms / 1000, buckets=config.length_buckets)

    def query(self, query: Mapping[str, Any], **options: Any) -> LegacyResult:
        start = time.perf_counter()
        options = {**self.default_options, **options}
        self.model.check_options(options)
        self.model.check_keys(query)
        prepared = self.model.prepare(query, options)
        response = self.batcher.submit(prepared).result()
        return LegacyResult(response, time.perf_counter() - start)

    def remote_query(self, query: Mapping[str, Any]) -> dict[str, Any]:
        return self.model.remote_query(query)

    def to_plain(self, response: Any) -> Any:
        return self.model.to_plain(response)

    def terminate(self) -> None:
        self.batcher.close()
