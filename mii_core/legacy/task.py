"""What a task plugin provides for one MII Legacy task: the typed seam between ``mii_core.legacy`` and
the plugins. The core names no task; a plugin registers a subclass of :class:`TaskModel` per task and
model type (``mii_core_register_tasks``), and the deployment drives it:

``load`` once → per query ``check_keys`` + ``prepare`` (alone: a bad query fails here, only itself) →
the dynamic batcher pads a batch of prepared queries to one bucketed length, ``collate`` → ``run`` (one
forward pass) → ``respond`` once per query (a failing response fails only its query).
"""
from __future__ import annotations

import base64
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence


log = logging.getLogger(__name__)


class QueryError(ValueError):
    """A query this task cannot answer (a missing key, no mask token, too long): it fails alone."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """One query made ready for a batch: ``length`` (tokens, what the batch is padded to), ``data``
    (whatever the plugin's ``collate`` and ``respond`` need) and the query's own ``options``."""

    length: int
    data: Any
    options: Mapping[str, Any] = field(default_factory=dict)


class TaskModel(ABC):
    """A model serving one task. Subclasses set ``required_keys`` (the keys every query must hold),
    ``optional_keys`` (those it may hold) and ``option_names`` (the per-query options ``query(..., **options)``
    accepts)."""

    required_keys: tuple[str, ...] = ()
    optional_keys: tuple[str, ...] = ()
    option_names: tuple[str, ...] = ()
    image_keys: tuple[str, ...] = ()  # keys holding an image: a query sent to a server gives its encoded bytes

    def __init__(self, task: str) -> None:
        self.task = task

    @classmethod
    @abstractmethod
    def load(cls, model_dir: Path, *, task: str, device: str, dtype: Any) -> "TaskModel":
        """The model and tokenizer of the checkpoint folder ``model_dir``, on ``device`` in ``dtype`` (a
        ``torch.dtype``), in eval mode."""

    @property
    @abstractmethod
    def max_length(self) -> int:
        """The most tokens one query may have (the model's positions)."""

    def enable_cuda_graph(self) -> None:
        """MII's ``enable_cuda_graph``: a task that can capture its forward pass in CUDA graphs does it here
        (after ``load``); this default says that it cannot, rather than accepting the option silently."""
        log.warning("enable_cuda_graph ignored: the %s task model %s captures no CUDA graphs", self.task,
                    type(self).__name__)

    def check_keys(self, query: Mapping[str, Any]) -> None:
        """A query must be a dict holding every required key; the error names the key and the task."""
        if not isinstance(query, Mapping):
            raise QueryError(f"a {self.task} query is a dict with the keys {list(self.required_keys)}, "
                             f"got {type(query).__name__}")
        for key in self.required_keys:
            if key not in query:
                raise QueryError(f"the {self.task} query has no '{key}' key (it needs "
                                 f"{', '.join(repr(k) for k in self.required_keys)}; got {sorted(query)})")
        unknown = sorted(set(query) - set(self.required_keys) - set(self.optional_keys))
        if unknown:
            raise QueryError(f"the {self.task} query has unknown keys {unknown}; it takes "
                             f"{list(self.required_keys + self.optional_keys)} (options such as top_k go as "
                             "keyword arguments of query())")

    def remote_query(self, query: Mapping[str, Any]) -> dict[str, Any]:
        """A query that came over the network, its images as encoded bytes: given as bytes (gRPC) or as
        base64 text (REST). A string is never read as a path: no client may make the server open a file."""
        self.check_keys(query)
        checked = dict(query)
        for key in self.image_keys:
            value = query.get(key)
            if isinstance(value, str):
                try:
                    checked[key] = base64.b64decode(value, validate=True)
                except ValueError:
                    raise QueryError(f"the {self.task} query's '{key}' is neither image bytes nor base64 text of "
                                     "them (a file path names a file on the client, which the server cannot read)"
                                     ) from None
            elif key in query and not isinstance(value, (bytes, bytearray)):
                raise QueryError(f"the {self.task} query's '{key}' must be the image's encoded bytes (PNG, JPEG, "
                                 f"...; base64 text over REST), got {type(value).__name__}")
        return checked

    def to_plain(self, response: Any) -> Any:
        """``response`` as plain data (dicts, lists, str, numbers, bools, None, bytes) for the wire; a task
        whose responses hold other objects (images) overrides this."""
        return response

    def check_options(self, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            raise QueryError(f"unknown {self.task} option(s) {unknown}; valid: {list(self.option_names) or 'none'}")

    @abstractmethod
    def prepare(self, query: Mapping[str, Any], options: Mapping[str, Any]) -> Prepared:
        """One query (its keys already checked) → tokens; raises :class:`QueryError` for bad input."""

    @abstractmethod
    def collate(self, prepared: Sequence[Prepared], pad_to: int) -> Any:
        """Prepared queries → the model's input tensors, every row padded to ``pad_to`` tokens."""

    @abstractmethod
    def run(self, batch: Any) -> Any:
        """One forward pass over a collated batch (under ``torch.inference_mode``)."""

    @abstractmethod
    def respond(self, prepared: Prepared, outputs: Any, row: int) -> Any:
        """The response of the query in batch row ``row`` (padding ignored): what ``result.response`` is."""
