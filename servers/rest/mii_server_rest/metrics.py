"""Prometheus metrics of the deployment (prometheus-client), filled by the router's observer events
and, at scrape time, by its health (queue depth, running sequences, KV blocks)."""
from __future__ import annotations

import collections
import threading
import time
from typing import Any, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from mii_core.serving.backend import Backend

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RATE_WINDOW_SECONDS = 10.0


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, backend: Backend) -> None:
        self.registry = CollectorRegistry()  # one per app: two deployments in one process stay apart
        self.requests = Counter("mii_requests", "Generation requests by outcome", ["outcome"], registry=self.registry)
        self.ttft = Histogram("mii_time_to_first_token_seconds", "Time from request to its first token",
                                     buckets=LATENCY_BUCKETS, registry=self.registry)
        self.itl = Histogram("mii_inter_token_latency_seconds", "Time between a prompt's tokens",
                                     buckets=LATENCY_BUCKETS, registry=self.registry)
        self.generated = Counter("mii_generated_tokens", "Tokens generated", registry=self.registry)
        self._recent: collections.deque = collections.deque()  # (time, tokens) for tokens/s
        self._lock = threading.Lock()
        self.registry.register(_HealthCollector(backend, self))
        if hasattr(backend, "add_observer"):
            backend.add_observer(self)

    # ---- the router's observer events ----
    def request_ended(self, outcome: str) -> None:
        self.requests.labels(outcome).inc()

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def inter_token(self, seconds: float) -> None:
        self.itl.observe(seconds)

    def tokens_generated(self, count: int) -> None:
        self.generated.inc(count)
        with self._lock:
            self._recent.append((time.monotonic(), count))

    def tokens_per_second(self) -> float:
        cutoff = time.monotonic() - RATE_WINDOW_SECONDS
        with self._lock:
            while self._recent and self._recent[0][0] < cutoff:
                self._recent.popleft()
            return sum(count for _, count in self._recent) / RATE_WINDOW_SECONDS

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _HealthCollector:
    """Gauges read from the router when Prometheus scrapes."""

    def __init__(self, backend: Backend, metrics: Metrics) -> None:
        self.backend, self.metrics = backend, metrics

    def collect(self) -> Iterator[Any]:
        health = self.backend.health()
        gauges = {
            "mii_queue_depth": ("Requests waiting to start", health.get("queued_requests", 0)),
            "mii_running_sequences": ("Sequences in the engines' batches", health.get("running", 0)),
            "mii_kv_blocks_in_use": ("KV cache blocks held by sequences", health.get("kv_blocks_used", 0)),
            "mii_kv_blocks_total": ("KV cache blocks of all live replicas", health.get("kv_blocks_total", 0)),
            "mii_replicas_alive": ("Replicas serving", health.get("replicas_alive", 0)),
            "mii_generation_tokens_per_second": (
                f"Tokens generated per second over the last {RATE_WINDOW_SECONDS:.0f} s",
                self.metrics.tokens_per_second()),
        }
        for name, (help_text, value) in gauges.items():
            yield GaugeMetricFamily(name, help_text, value=value)
