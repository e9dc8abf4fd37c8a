"""A replica: one engine (a pipeline and its service) served over the deployment's link.

Run by the router as ``python -m mii_core.serving.replica DEPLOYMENT_FOLDER INDEX`` (see launch.py).
It exits when asked (terminate), or when its parent (the router) is gone, so no replica outlives
its deployment.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

from mii_core.config import ModelConfig
from mii_core.config.deployment import MIIConfig
from mii_core.requests import generation_options, normalize_prompts
from mii_core.response import Response
from mii_core.serving.backend import STARTED, Backend, Chunk, GenerateRequest, ResponseStream
from mii_core.serving.errors import InvalidRequest
from mii_core.serving.link import LinkServer, backend_handler
from mii_core.serving.metadata import load_record
from mii_core.serving.ports import LINK_HOST
from mii_core.serving.stream import RequestStream

log = logging.getLogger("mii_core.replica")
PARENT_CHECK_SECONDS = 0.5


class LocalStream(ResponseStream):
    def __init__(self, request: RequestStream, prompts: Optional[list[str]], full_text: list[bool], text: bool) -> None:
        self._request, self._prompts, self._full_text, self._text = request, prompts, full_text, text
        self.responses = None

    def cancel(self) -> None:
        self._request.cancel()

    def events(self, poll_interval: Optional[float] = None) -> Iterator[Any]:
        started, prefixed = False, set()
        for chunk in self._request.chunks(poll_interval, decode=self._text):
            if not started and (chunk is not None or self._request.started.is_set()):
                started = True
                yield STARTED
            if chunk is None:
                yield None
                continue
            text = chunk.text
            if self._text and self._full_text[chunk.index] and chunk.index not in prefixed:
                text = self._prompts[chunk.index] + text  # so the pieces add up to the full text
                prefixed.add(chunk.index)
            prompt_length = len(self._request.seqs[chunk.index].prompt_ids)
            yield Chunk(chunk.index, Response(text, prompt_length, chunk.generated_length, chunk.finish_reason))
        self.responses = [self._response(i, out) for i, out in enumerate(self._request.result())]

    def _response(self, index: int, out) -> Response:
        text = self._prompts[index] + out.text if self._full_text[index] else out.text
        return Response(text, out.prompt_length, len(out.token_ids), out.finish_reason)


class LocalBackend(Backend):
    """The engine of this process as a Backend."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.terminated = threading.Event()

    def submit(self, request: GenerateRequest) -> LocalStream:
        if (request.prompts is None) == (request.chats is None):
            raise InvalidRequest("give either prompts or chat messages")
        if request.prompts is not None:
            prompts, prompt_ids = normalize_prompts(request.prompts), None
        else:
            prompts, prompt_ids = None, [self._chat_ids(chat) for chat in request.chats]
        count = len(prompts) if prompts is not None else len(prompt_ids)
        options = self._options(request.options, count)
        if prompts is None and any(o.return_full_text for o in options):
            raise InvalidRequest("return_full_text does not apply to chat messages")
        stream = self.pipe.submit(prompts, options, prompt_ids=prompt_ids, stream_tokens=True)
        return LocalStream(stream, prompts, [o.return_full_text for o in options], request.stream)

    @staticmethod
    def _options(options: Any, count: int) -> list:
        if isinstance(options, dict):
            return [generation_options(options)] * count
        if not isinstance(options, list) or len(options) != count or not all(isinstance(o, dict) for o in options):
            raise InvalidRequest(f"options must be one dict, or a list of {count} dicts (one per prompt)")
        return [generation_options(o) for o in options]

    def _chat_ids(self, messages: Any) -> list[int]:
        tokenizer = self.pipe.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise InvalidRequest("this model's tokenizer has no chat template, so chat messages cannot be turned "
                                 "into a prompt; use completions (a plain prompt) instead")
        try:
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        except Exception as exc:  # a template rejects messages it cannot render (roles, order)
            raise InvalidRequest(f"the chat template could not render these messages: {exc}") from None
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        return list(ids)

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "pid": os.getpid(), **self.pipe.service.snapshot()}

    def terminate(self) -> None:
        self.terminated.set()


def replica_model_config(config: MIIConfig, placement: dict[str, Any]) -> ModelConfig:
    """The model options of one replica: one engine, on this replica's devices."""
    device = config.model_conf.device
    if device is None:  # launch.replica_env shows the replica only its own GPUs
        device = "cuda:0" if placement["devices"] else "cpu"
    return config.model_conf.model_copy(update={"replica_num": 1, "device": device, "device_map": "auto"})


def main(argv: Optional[list[str]] = None) -> int:
    folder, index = argv if argv is not None else sys.argv[1:3]
    index = int(index)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s replica {index} %(levelname)s %(message)s")
    record = load_record(Path(folder))
    if record is None:
        raise SystemExit(f"no deployment record in {folder}")
    config = MIIConfig.model_validate(record.config)
    parent = os.getppid()
    from mii_core.pipeline import Pipeline

    backend = LocalBackend(Pipeline(replica_model_config(config, record.placements[index])))
    host, port = record.replica_links[index]
    server = LinkServer(host or LINK_HOST, port, record.key, backend_handler(backend), name=f"replica{index}").start()
    log.info("replica %d ready on %s:%d (pid %d)", index, host, port, os.getpid())
    while not backend.terminated.wait(PARENT_CHECK_SECONDS):
        if os.getppid() != parent:
            log.warning("the router (pid %d) is gone; exiting", parent)
            break
    server.close()
    backend.pipe.service.close()
    logging.shutdown()
    os._exit(0)  # daemon threads (link connections) need no join; the engine holds nothing to flush


if __name__ == "__main__":
    sys.exit(main())
