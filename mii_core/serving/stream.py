"""A submitted request as its caller sees it: a queue of events from the engine's loop thread.

The loop thread only posts cheap events (started, a sequence's token count, finished, failed); the
caller's thread does the decoding, so text work runs beside the engine rather than inside its loop.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from mii_core.scheduler.sequence import Sequence
from mii_core.serving.detokenize import TextStream


@dataclass(slots=True)
class StreamChunk:
    index: int  # which sequence of the request
    text: str  # new text since the last chunk ("" when nothing is ready, or text is not streamed)
    generated_length: int  # tokens generated so far
    finish_reason: str  # "none" until the sequence's last chunk
    logprobs: Optional[list] = None  # TokenLogprobs of the tokens this chunk adds, where the options asked
    # on a sequence's first chunk where the options asked for prompt_logprobs: its prompt tokens' TokenLogprobs
    prompt_logprobs: Optional[list] = None


@dataclass(slots=True)
class SequenceOutput:
    token_ids: list[int]
    text: str  # the unstreamed text: decoded, cut at a stop string
    finish_reason: str
    prompt_length: int
    logprobs: Optional[list] = None  # per generated token a TokenLogprob, where the options asked
    prompt_ids: Optional[list[int]] = None
    prompt_logprobs: Optional[list] = None  # per prompt token after the first a TokenLogprob, where asked


class Detokenizer:
    """Final and streamed text of a sequence, from the tokenizer and the stop checker."""

    def __init__(self, tokenizer: Any, stopper: Any) -> None:
        self.tokenizer, self.stopper = tokenizer, stopper

    def final_text(self, seq: Sequence) -> str:
        return self.stopper.final_text(seq)

    def text_stream(self, seq: Sequence) -> TextStream:
        options = seq.options
        stops = options.stop
        # a stop token's text is left out of the final text (vLLM's rule; StopChecker): EOS's too when
        # special tokens are kept
        stop_token_text = not options.include_stop_str_in_output and bool(
            options.stop_token_ids or not options.skip_special_tokens)
        # With min_new_tokens, a stop string found later may cut text before that point (the stop
        # check scans from the start once allowed), so nothing is safe to send before the end.
        return TextStream(self.tokenizer, stops, hold_all=bool(stops) and options.min_new_tokens > 0,
                          hold_last_token=stop_token_text, skip_special_tokens=options.skip_special_tokens)


class RequestStream:
    """Events of one request (one or more sequences) on their way from the loop thread."""

    def __init__(self, seqs: list[Sequence], detokenizer: Detokenizer, stream_tokens: bool = True) -> None:
        self.seqs = seqs
        self.stream_tokens = stream_tokens  # False: the loop posts only start and end (a waiting caller)
        self.started = threading.Event()  # set once the consumer saw a sequence enter the batch
        self._detok = detokenizer
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._service: Any = None
        self._watcher: Optional[Callable[[], None]] = None  # called after each event posted
        # written by the loop thread only, through the methods below
        self._waiting = True  # accepted, but no sequence has entered the batch and it has not ended
        self._ended = False
        self._live = len(seqs)  # sequences not finished yet
        # written by the consumer only
        self._outputs: list[Optional[SequenceOutput]] = [None] * len(seqs)
        self._texts: list[Optional[TextStream]] = [None] * len(seqs)
        self._seen = [0] * len(seqs)
        self._logprobs_sent = [0] * len(seqs)
        self._prompt_sent = [False] * len(seqs)
        self._remaining = len(seqs)
        self._held: Optional[tuple] = None  # an event read ahead while merging token events

    # ---- the loop thread's side (the engine service) ----
    def watch(self, wake: Callable[[], None]) -> None:
        """``wake()`` is called on the loop thread after every event posted from now on (it must be cheap:
        a consumer that serves many streams from one thread waits on it instead of on each queue); the
        service may hold it back until the loop next waits for the device (``EngineService.wake_soon``)."""
        self._watcher = wake

    def _posted(self) -> None:
        if self._watcher is None:
            return
        if self._service is not None:
            self._service.wake_soon(self._watcher)
        else:
            self._watcher()

    def attach(self, service: Any) -> None:
        """The service that runs this request; ``cancel`` goes to it."""
        self._service = service

    @property
    def waiting(self) -> bool:
        """Accepted, but no sequence has entered the batch yet, and the request has not ended."""
        return self._waiting

    @property
    def ended(self) -> bool:
        """The request left the loop: finished, cancelled or failed."""
        return self._ended

    def mark_started(self) -> None:
        """A sequence entered the batch: the caller hears "started"."""
        self._waiting = False
        self._events.put(("started",))
        self._posted()

    def post_tokens(self, index: int, count: int) -> None:
        """Sequence ``index`` has ``count`` generated tokens now."""
        self._events.put(("tokens", index, count))
        self._posted()

    def finish_sequence(self, index: int) -> bool:
        """Sequence ``index`` finished; True when it was the request's last one running."""
        self._events.put(("finished", index))
        self._live -= 1
        self._posted()
        return self._live == 0

    def end(self, error: Optional[BaseException] = None) -> None:
        """The request leaves the loop: finished (``error`` None), cancelled or failed with ``error``."""
        self._ended, self._waiting = True, False
        if error is not None:
            self._events.put(("failed", error))
        self._posted()

    # ---- the caller's side ----
    def cancel(self) -> None:
        """Asks the loop to drop the request; its KV blocks are freed before the next step."""
        if self._service is not None and self._remaining:
            self._service.cancel(self)

    @property
    def done(self) -> bool:
        return self._remaining == 0

    def chunks(self, poll_interval: Optional[float] = None, decode: bool = True) -> Iterator[Optional[StreamChunk]]:
        """Text pieces as the sequences grow, the last of each sequence with its finish_reason.

        With ``poll_interval``, also yields None when nothing came for that long and when the request
        started, so a server can check its client and report the start. ``decode=False``: pieces carry
        token counts only. Raises the request's error.
        """
        while self._remaining:
            if poll_interval == 0 and self._held is None and self._events.empty():
                yield None  # a pump's look at an idle stream: no timed get, no exception raised and caught
                continue
            try:
                event = self._merged(self._next_event(poll_interval))
            except queue.Empty:
                yield None
                continue
            chunk = self._apply(event, decode=decode)
            if chunk is not None or (poll_interval is not None and event[0] == "started"):
                yield chunk

    def result(self, on_finish: Optional[Callable[[int], None]] = None,
               timeout: Optional[float] = None) -> list[SequenceOutput]:
        """Waits for every sequence; raises the request's error (or queue.Empty after ``timeout``)."""
        while self._remaining:
            event = self._next_event(timeout)
            self._apply(event, decode=False)
            if event[0] == "finished" and on_finish is not None:
                on_finish(event[1])
        return list(self._outputs)

    def _next_event(self, timeout: Optional[float]) -> tuple:
        if self._held is not None:
            event, self._held = self._held, None
            return event
        return self._events.get(timeout=timeout)

    def _merged(self, event: tuple) -> tuple:
        """A sequence's token events queued back to back become its latest one: a consumer that fell behind
        the engine (many streams in one process) makes one piece of the tokens it missed, not one per step,
        so its per-token work (text, message, send) does not grow the GIL's queue in front of the engine."""
        while event[0] == "tokens":
            try:
                after = self._events.get_nowait()
            except queue.Empty:
                return event
            if after[0] != "tokens" or after[1] != event[1]:
                self._held = after
                return event
            event = after
        return event

    def _apply(self, event: tuple, decode: bool) -> Optional[StreamChunk]:
        kind = event[0]
        if kind == "failed":
            self._remaining = 0
            raise event[1]
        if kind == "started":
            self.started.set()
            return None
        index = event[1]
        seq = self.seqs[index]
        if kind == "tokens":
            return self._on_tokens(index, seq, event[2], decode)
        return self._on_finished(index, seq, decode)

    def _on_tokens(self, index: int, seq: Sequence, count: int, decode: bool) -> StreamChunk:
        text = ""
        if decode:
            text = self._text(index).push(seq.generated_ids[self._seen[index]:count])
            self._seen[index] = count
        return self._with_logprobs(StreamChunk(index, text, count, "none"), seq, decode)

    def _on_finished(self, index: int, seq: Sequence, decode: bool) -> StreamChunk:
        final = self._detok.final_text(seq)
        logprobs = list(seq.logprobs) if seq.options.logprobs is not None else None
        prompt_logprobs = list(seq.prompt_logprobs) if seq.options.prompt_logprobs is not None else None
        self._outputs[index] = SequenceOutput(list(seq.generated_ids), final, seq.finish_reason, len(seq.prompt_ids),
                                              logprobs, list(seq.prompt_ids), prompt_logprobs)
        self._remaining -= 1
        rest = self._text(index).finish(final) if decode else ""
        return self._with_logprobs(StreamChunk(index, rest, len(seq.generated_ids), seq.finish_reason), seq, decode)

    def _with_logprobs(self, chunk: StreamChunk, seq: Sequence, decode: bool) -> StreamChunk:
        """Streamed pieces (``decode``) carry the logprobs of the tokens they add, and the first piece the
        prompt's (complete by then: a sequence's first token comes from its prompt's last chunk)."""
        index = chunk.index
        if not decode:
            return chunk
        if seq.options.logprobs is not None:
            chunk.logprobs = seq.logprobs[self._logprobs_sent[index]:chunk.generated_length]
            self._logprobs_sent[index] = chunk.generated_length
        if seq.options.prompt_logprobs is not None and not self._prompt_sent[index]:
            chunk.prompt_logprobs, self._prompt_sent[index] = list(seq.prompt_logprobs), True
        return chunk

    def _text(self, index: int) -> TextStream:
        if self._texts[index] is None:
            self._texts[index] = self._detok.text_stream(self.seqs[index])
        return self._texts[index]
