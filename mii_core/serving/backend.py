"""What serves a request, seen from a front end: a replica's engine, or the router in front of them.

Every hop speaks the same shape: ``Backend.submit(GenerateRequest)`` returns a ``ResponseStream``
whose events are ``STARTED`` (the request entered an engine's batch), ``Chunk`` (new text of one
prompt; the last one of a prompt carries its finish_reason) and, when polled, ``None`` (nothing new:
a chance to check the client). Errors are :mod:`mii_core.serving.errors` exceptions.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterator, Optional, Union

from mii_core.response import Response

STARTED = "started"


@dataclass(slots=True)
class Chunk:
    index: int  # which prompt of the request
    response: Response  # generated_text is the new text ("" when text was not asked for)

    @property
    def has_news(self) -> bool:
        """New text or logprobs, or the end of its prompt: what a client is shown (others only count tokens)."""
        response = self.response
        return (bool(response.generated_text) or response.finish_reason != "none" or bool(response.logprobs)
                or response.prompt_logprobs is not None)


    def joins(self, later: "Chunk") -> bool:
        """Whether ``later`` may travel as one piece with this one: the same prompt's generated tokens. A
        prompt's own piece (its echo or prompt logprobs: no generated token) stays apart, as vLLM streams it."""
        return (later.index == self.index and self.response.generated_length > 0
                and later.response.generated_length > 0 and later.response.prompt_logprobs is None)

    def followed_by(self, later: "Chunk") -> "Chunk":
        """This piece and the next of the same prompt as one (a reader that fell behind sends them on together):
        the texts and logprobs joined, the later counts and finish_reason (``joins`` says when it may)."""
        first, last = self.response, later.response
        logprobs = None if first.logprobs is None and last.logprobs is None else [
            *(first.logprobs or []), *(last.logprobs or [])]
        return Chunk(self.index, Response(first.generated_text + last.generated_text, last.prompt_length,
                                          last.generated_length, last.finish_reason, logprobs=logprobs,
                                          token_ids=last.token_ids, prompt_logprobs=first.prompt_logprobs,
                                          prompt_token_ids=first.prompt_token_ids))


Event = Union[str, Chunk, None]


@dataclass
class GenerateRequest:
    """Prompts: text, chat conversations (rendered by the model's chat template) or token ids (one of
    the three), and their options.

    ``options`` holds MII's generation options, one dict for all prompts or one per prompt.
    ``stream``: the caller wants the text as it comes (else chunks only count tokens).
    """

    prompts: Optional[list[str]] = None
    chats: Optional[list[list[dict[str, Any]]]] = None
    options: Union[dict[str, Any], list[dict[str, Any]]] = field(default_factory=dict)
    stream: bool = False
    prompt_ids: Optional[list[list[int]]] = None
    # OpenAI's function tools, handed to the chat template with the chats (apply_chat_template(tools=...))
    tools: Optional[list[dict[str, Any]]] = None
    # with chats: vLLM's chat template options (chat_prompt.ChatTemplateOptions' wire form)
    chat_template_options: Optional[dict[str, Any]] = None

    @property
    def count(self) -> int:
        """Sequences this request asks for (for load accounting; the engine checks the shape)."""
        items = next((i for i in (self.prompts, self.chats, self.prompt_ids) if i is not None), None)
        return len(items) if isinstance(items, list) else 1

    def to_wire(self) -> dict[str, Any]:
        # A shallow map of the fields (plain data already): dataclasses.asdict deep-copies every prompt token
        # id one recursive call at a time, which led the router's profile while W1's 256 requests arrived.
        return {"op": "generate", **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_wire(cls, message: dict[str, Any]) -> "GenerateRequest":
        return cls(prompts=message.get("prompts"), chats=message.get("chats"),
                   options=message.get("options") or {}, stream=bool(message.get("stream")),
                   prompt_ids=message.get("prompt_ids"), tools=message.get("tools"),
                   chat_template_options=message.get("chat_template_options"))


@dataclass
class TaskQuery:
    """One MII Legacy query for a task deployment: the task's keys (plain data: images as their encoded
    bytes) and its options. ``task``: the task the caller means (a gRPC method names one; the replica
    refuses another), None for whatever the deployment serves. Its stream's ``responses`` is a
    ``TaskAnswer``: ``{"response": plain data, "time_taken": seconds}``."""

    query: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    task: Optional[str] = None

    count = 1  # one query is one unit of load, whatever it holds

    def to_wire(self) -> dict[str, Any]:
        return {"op": "query", "query": self.query, "options": self.options, "task": self.task}

    @classmethod
    def from_wire(cls, message: dict[str, Any]) -> "TaskQuery":
        return cls(query=message["query"], options=message["options"], task=message["task"])


Request = Union[GenerateRequest, TaskQuery]


class ResponseStream(ABC):
    """One request in flight. Iterate ``events()`` (or call ``result()``); ``cancel()`` from any thread."""

    responses: Optional[list[Response]] = None  # set once every prompt finished (a TaskQuery's: its answer)

    @abstractmethod
    def events(self, poll_interval: Optional[float] = None) -> Iterator[Event]:
        """STARTED, then Chunks; with ``poll_interval`` also None when nothing came for that long."""

    @abstractmethod
    def cancel(self) -> None:
        """Stops the request; the engine frees its sequences at its next step."""

    def watch(self, wake: Callable[[], None]) -> bool:
        """Asks for ``wake()`` after each new event, so that one thread can serve many streams, reading
        ``events(poll_interval=0)`` when woken; False where this stream cannot (then read it in a thread)."""
        return False

    def result(self) -> list[Response]:
        for _ in self.events():
            pass
        return self.responses


class Backend(ABC):
    @abstractmethod
    def submit(self, request: Request) -> ResponseStream:
        """Starts a request; errors found before it runs (bad input, a full queue) raise here. A backend
        serves either generation requests or task queries, and refuses the other kind as ``invalid``."""

    @abstractmethod
    def health(self) -> dict[str, Any]:
        """At least ``status``: "ok", "degraded" (serving, but a part is lost), "down" or "stopping"."""

    @abstractmethod
    def terminate(self) -> None:
        """Asks the whole deployment (or this replica) to shut down; returns at once."""

