"""A replica: one engine (a pipeline and its service) served over the deployment's link.

Run by the router as ``python -m mii_core.replica_main DEPLOYMENT_FOLDER INDEX`` (see launch.py), which
hands :func:`run_replica` the way to build the pipeline (serving sits below the pipeline and never imports
it), once, or under tensor parallelism once per rank by the launcher: rank 0 serves the link and its engine
service drives the other ranks, which follow its steps (:mod:`mii_core.serving.lockstep`). It exits
when asked (terminate: rank 0 stops the other ranks), when the router is gone, or (tensor parallel)
when a rank is lost: rank 0 fails its requests with an error naming the replica and the cause, then
exits with code 3, and the launcher ends the remaining ranks. So no rank outlives its deployment.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol

from mii_core.config import ModelConfig
from mii_core.config.deployment import MIIConfig
from mii_core.requests import generation_options, normalize_prompt_ids, normalize_prompts
from mii_core.response import Response
from mii_core.serving.backend import STARTED, Backend, Chunk, Request, ResponseStream, TaskQuery
from mii_core.serving.chat_prompt import ChatOptionError, ChatTemplateOptions, chat_token_ids
from mii_core.serving.errors import InvalidRequest
from mii_core.serving.launch import ROUTER_PID_ENV
from mii_core.serving.link import LinkServer, backend_handler
from mii_core.serving.lockstep import gather_rank_pids
from mii_core.serving.responses import final_response, piece_response
from mii_core.serving.metadata import load_record, lost_ranks, process_alive
from mii_core.serving.ports import LINK_HOST
from mii_core.serving.stream import RequestStream, StreamChunk

log = logging.getLogger("mii_core.replica")
PARENT_CHECK_SECONDS = 0.5
RANK_LOST_EXIT_CODE = 3
ROUTER_SILENCE_SECONDS = 30.0  # a replica on another host exits after this long without a health call


class ServedPipeline(Protocol):
    """What a replica needs of the pipeline it serves (``mii_core.pipeline.Pipeline``)."""

    tokenizer: Any
    ctx: Any  # the tensor-parallel context: rank, world_size

    def submit(self, prompts: Optional[list[str]], options: Any, prompt_ids: Optional[list[list[int]]] = None,
               stream_tokens: bool = True) -> RequestStream: ...
    def snapshot(self) -> dict[str, Any]: ...
    def lead_followers(self, explain_stop: Callable[[Exception], str]) -> None: ...
    def follow_leader(self) -> None: ...
    def service_failure(self) -> Optional[Exception]: ...
    def stop_service(self) -> None: ...


class LocalStream(ResponseStream):
    def __init__(self, request: RequestStream, prompts: Optional[list[str]], full_text: list[bool], text: bool,
                 tokenizer: Any) -> None:
        # prompts: each prompt's text where return_full_text echoes it (None for chats, which never do)
        self._request, self._prompts, self._full_text, self._text = request, prompts, full_text, text
        self._tokenizer = tokenizer
        self.responses = None

    def cancel(self) -> None:
        self._request.cancel()

    def watch(self, wake: Callable[[], None]) -> bool:
        self._request.watch(wake)
        return True

    def events(self, poll_interval: Optional[float] = None) -> Iterator[Any]:
        started, prompted = False, set()
        for chunk in self._request.chunks(poll_interval, decode=self._text):
            if not started and (chunk is not None or self._request.started.is_set()):
                started = True
                yield STARTED
            if chunk is None:
                yield None
                continue
            prompt_ids = self._request.seqs[chunk.index].prompt_ids
            if self._text and chunk.index not in prompted:
                prompted.add(chunk.index)
                yield from self._prompt_piece(chunk, prompt_ids)
            yield Chunk(chunk.index, piece_response(self._tokenizer, chunk.text, prompt_ids, chunk))
        self.responses = [self._response(i, out) for i, out in enumerate(self._request.result())]

    def _prompt_piece(self, chunk: StreamChunk, prompt_ids: list[int]) -> Iterator[Chunk]:
        """A streamed sequence's echoed prompt (return_full_text) and its prompt logprobs, as a piece of
        its own before the generated ones (so the pieces add up to the full text), as vLLM streams echo."""
        echo = self._full_text[chunk.index]
        if not echo and chunk.prompt_logprobs is None:
            return
        prompt = StreamChunk(chunk.index, "", 0, "none", prompt_logprobs=chunk.prompt_logprobs)
        chunk.prompt_logprobs = None
        text = self._prompts[chunk.index] if echo else ""
        yield Chunk(chunk.index, piece_response(self._tokenizer, text, prompt_ids, prompt))

    def _response(self, index: int, out) -> Response:
        text = self._prompts[index] + out.text if self._full_text[index] else out.text
        return final_response(self._tokenizer, text, out)


class LocalBackend(Backend):
    """The engine of this process as a Backend."""

    def __init__(self, pipe: ServedPipeline, rank_pids: Optional[list[int]] = None) -> None:
        self.pipe = pipe
        self.rank_pids = rank_pids or [os.getpid()]  # rank order; the router watches each
        self.terminated = threading.Event()
        self._last_health = time.monotonic()  # the router asks for health every second or so

    def seconds_since_health(self) -> float:
        return time.monotonic() - self._last_health

    def submit(self, request: Request) -> LocalStream:
        if isinstance(request, TaskQuery):
            raise InvalidRequest("this deployment generates text (mii_core.serve); MII Legacy task queries go to a "
                                 "deployment started by mii_core.legacy.deploy")
        given = [request.prompts is not None, request.chats is not None, request.prompt_ids is not None]
        if sum(given) != 1:
            raise InvalidRequest("give one of prompts, chat messages or prompt token ids")
        if request.prompts is not None:
            prompts, prompt_ids = normalize_prompts(request.prompts), None
        elif request.chats is not None:
            template = self._template_options(request.chat_template_options)
            prompts, prompt_ids = None, [self._chat_ids(chat, request.tools, template) for chat in request.chats]
        else:
            prompts, prompt_ids = None, normalize_prompt_ids(request.prompt_ids)
        count = len(prompts) if prompts is not None else len(prompt_ids)
        options = self._options(request.options, count)
        full_text = [o.return_full_text for o in options]
        if request.chats is None and (request.tools is not None or request.chat_template_options is not None):
            raise InvalidRequest("tools and chat template options apply to chat messages only")
        if request.chats is not None and any(full_text):
            raise InvalidRequest("return_full_text does not apply to chat messages")
        stream = self.pipe.submit(prompts, options, prompt_ids=prompt_ids, stream_tokens=True)
        return LocalStream(stream, prompts or self._echo_texts(prompt_ids, full_text), full_text, request.stream,
                           self.pipe.tokenizer)

    def _echo_texts(self, prompt_ids: list[list[int]], full_text: list[bool]) -> list[str]:
        """The text a token-id prompt echoes (return_full_text): its ids decoded, as vLLM shows it."""
        return [self.pipe.tokenizer.decode(ids) if echo else "" for ids, echo in zip(prompt_ids, full_text)]

    @staticmethod
    def _options(options: Any, count: int) -> list:
        if isinstance(options, dict):
            return [generation_options(options)] * count
        if not isinstance(options, list) or len(options) != count or not all(isinstance(o, dict) for o in options):
            raise InvalidRequest(f"options must be one dict, or a list of {count} dicts (one per prompt)")
        return [generation_options(o) for o in options]

    @staticmethod
    def _template_options(wire: Optional[dict[str, Any]]) -> ChatTemplateOptions:
        try:
            return ChatTemplateOptions.from_fields(wire)
        except ChatOptionError as exc:
            raise InvalidRequest(str(exc)) from None

    def _chat_ids(self, messages: Any, tools: Optional[list[dict[str, Any]]],
                  template: ChatTemplateOptions) -> list[int]:
        tokenizer = self.pipe.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise InvalidRequest(NO_CHAT_TEMPLATE)
        try:
            return chat_token_ids(tokenizer, messages, tools, template)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None

    def health(self) -> dict[str, Any]:
        self._last_health = time.monotonic()
        return {"status": "ok", "pid": os.getpid(), "rank_pids": self.rank_pids, **self.pipe.snapshot()}

    def terminate(self) -> None:
        self.terminated.set()


NO_CHAT_TEMPLATE = ("this model's tokenizer has no chat template, so chat messages cannot be turned into a prompt: "
                    "deploy it with the model option chat_template (a Jinja template, or a file holding one), "
                    "or use completions (a plain prompt)")


def replica_model_config(config: MIIConfig, placement: dict[str, Any]) -> ModelConfig:
    """The model options of one replica: one engine, on this replica's devices."""
    device = config.model_conf.device
    if device is None and not placement["devices"]:
        device = "cpu"
    elif device is None and config.model_conf.tensor_parallel == 1:
        device = "cuda:0"  # launch.replica_env shows the replica only its own GPUs
    # (tensor parallel on GPUs: device None, so each rank takes cuda:LOCAL_RANK of those its launcher gave)
    return config.model_conf.model_copy(update={"replica_num": 1, "device": device, "device_map": "auto",
                                                    "replica_configs": []})


class RouterWatch:
    """Whether the router that started this replica still runs (its pid from the environment; else the
    parent, which is the router for a replica without a launcher, and DeepSpeed's launcher for a
    replica on another host, which the router's own launcher ends through pdsh)."""

    def __init__(self) -> None:
        raw = os.environ.get(ROUTER_PID_ENV, "")
        self.pid = int(raw) if raw.isdigit() else os.getppid()

    def alive(self) -> bool:
        return process_alive(self.pid)

    def exit_when_gone(self, what: str) -> None:
        """A daemon thread that ends this process once the router is gone (for ranks busy in collectives)."""
        def watch() -> None:
            while self.alive():
                threading.Event().wait(PARENT_CHECK_SECONDS)
            log.warning("the router (pid %d) is gone; %s exits", self.pid, what)
            os._exit(1)
        threading.Thread(target=watch, name="router-watch", daemon=True).start()


def run_replica(build_pipeline: Callable[[ModelConfig], ServedPipeline], argv: Optional[list[str]] = None) -> int:
    """The replica process (one rank of it): ``argv`` is DEPLOYMENT_FOLDER INDEX; never returns (os._exit)."""
    folder, index = argv if argv is not None else sys.argv[1:3]
    index = int(index)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s replica {index} rank {rank} %(levelname)s %(message)s")
    record = load_record(Path(folder))
    if record is None:
        raise SystemExit(f"no deployment record in {folder}")
    config = MIIConfig.model_validate(record.config)
    router = RouterWatch()
    router.exit_when_gone(f"replica {index} rank {rank}")
    pipe = build_pipeline(replica_model_config(config, record.placements[index]))
    rank_pids = gather_rank_pids(pipe.ctx)
    if pipe.ctx.rank > 0:
        _follow(pipe, index)
    if pipe.ctx.world_size > 1:  # rank 0: its engine service drives every rank
        pipe.lead_followers(explain_stop=lambda exc: _explain_loss(index, rank_pids, exc))
    backend = LocalBackend(pipe, rank_pids)
    host, port = record.link_bind(index)
    server = LinkServer(host or LINK_HOST, port, record.key, backend_handler(backend, f"replica{index}"),
                        name=f"replica{index}").start()
    log.info("replica %d ready on %s:%d (pid %d, ranks' pids %s)", index, host, port, os.getpid(), rank_pids)
    code = _serve_until_done(backend, router, remote=record.remote_host(index) is not None)
    server.close()
    if code == 0:
        pipe.stop_service()  # under tensor parallelism this stops the other ranks too
    logging.shutdown()
    os._exit(code)  # daemon threads (link connections) need no join; the engine holds nothing to flush


def _serve_until_done(backend: LocalBackend, router: RouterWatch, remote: bool = False) -> int:
    """``remote``: on another host than the router, whose pid cannot be watched from here (``router`` then
    watches DeepSpeed's launcher, this process's parent), so a router silent for ROUTER_SILENCE_SECONDS
    (it asks for health every second) counts as gone too."""
    while not backend.terminated.wait(PARENT_CHECK_SECONDS):
        if not router.alive():
            log.warning("the router (pid %d) is gone; exiting", router.pid)
            return 0
        if remote and backend.seconds_since_health() > ROUTER_SILENCE_SECONDS:
            log.warning("no word from the router for %.0f s; exiting", ROUTER_SILENCE_SECONDS)
            return 0
        failure = backend.pipe.service_failure()
        if failure is not None:  # under tensor parallelism: a rank was lost
            log.error("%s", failure)
            time.sleep(PARENT_CHECK_SECONDS)  # lets the link threads deliver the requests' errors
            return RANK_LOST_EXIT_CODE
    return 0


def _explain_loss(index: int, rank_pids: list[int], exc: Exception) -> str:
    time.sleep(0.1)  # a dying peer's sockets close just before its process turns into a zombie
    gone = lost_ranks(rank_pids)
    return f"replica {index} lost {', '.join(gone)}: {exc}" if gone else f"replica {index} stopped: {exc}"


def _follow(pipe: ServedPipeline, index: int) -> None:
    """Ranks > 0: follow rank 0's steps until it stops them (exit 0) or is lost (exit 3)."""
    try:
        pipe.follow_leader()
        code = 0
    except Exception:
        log.exception("replica %d rank %d stopped", index, pipe.ctx.rank)
        code = RANK_LOST_EXIT_CODE
    logging.shutdown()
    os._exit(code)
