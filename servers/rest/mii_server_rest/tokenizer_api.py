"""vLLM's tokenizer routes: ``POST /tokenize``, ``POST /detokenize``, ``GET /tokenizer_info``.

lm-evaluation-harness (``tokenizer_backend=remote``/``auto``) counts and cuts prompts with them. The
tokenizer is the deployment's own (``tokenizer``, else the model's folder or name), loaded in this
process on first use, as the replicas load it with ``AutoTokenizer`` (never running a checkpoint's code).

Shapes, as vLLM answers: ``/tokenize`` takes ``prompt`` (with ``add_special_tokens``, default true) or
chat ``messages`` (with ``add_generation_prompt``, default true) and answers ``{count, tokens,
token_strs, max_model_len}`` (``token_strs`` only with ``return_token_strs``; ``max_model_len`` is the
tokenizer's ``model_max_length``); ``/detokenize`` takes ``tokens`` and answers ``{prompt}``.
"""
from __future__ import annotations

import threading
from typing import Any, Optional

from flask import Flask, jsonify, request

from mii_core.serving.chat_prompt import ChatOptionError, ChatTemplateOptions, chat_token_ids
from mii_core.serving.transport import TransportSettings
from mii_server_rest.auth import needs_key
from mii_server_rest.body import json_body
from mii_server_rest.errors import HttpError

TOKENIZE_FIELDS = {"model", "prompt", "messages", "add_special_tokens", "add_generation_prompt",
                   "continue_final_message", "chat_template_kwargs", "return_token_strs"}
DETOKENIZE_FIELDS = {"model", "tokens"}
# what /tokenizer_info shows of the tokenizer's settings (vLLM shows its init kwargs; these are the
# plain ones clients read: special tokens, the chat template, lengths)
INFO_FIELDS = ("bos_token", "eos_token", "pad_token", "unk_token", "chat_template", "model_max_length",
               "add_bos_token", "add_eos_token", "padding_side", "truncation_side", "clean_up_tokenization_spaces")


class LazyTokenizer:
    """The deployment's tokenizer, loaded once on first use (most deployments never need it here)."""

    def __init__(self, name: str, chat_template: Optional[str] = None) -> None:
        self.name, self._tokenizer, self._lock = name, None, threading.Lock()
        self.chat_template = chat_template  # the deployment's chat_template option, as the replicas apply it

    def get(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.name, trust_remote_code=False)
                if self.chat_template is not None:
                    self._tokenizer.chat_template = self.chat_template
            return self._tokenizer


def register_tokenizer_routes(app: Flask, settings: TransportSettings, lazy: LazyTokenizer) -> None:

    @app.post("/tokenize")
    @needs_key(settings)
    def tokenize() -> Any:
        body = _checked_body(settings, TOKENIZE_FIELDS)
        tokenizer = lazy.get()
        ids = _token_ids(tokenizer, body)
        strs = tokenizer.convert_ids_to_tokens(ids) if _flag(body, "return_token_strs", False) else None
        return jsonify({"count": len(ids), "max_model_len": _max_length(tokenizer), "tokens": ids,
                        "token_strs": strs})

    @app.post("/detokenize")
    @needs_key(settings)
    def detokenize() -> Any:
        body = _checked_body(settings, DETOKENIZE_FIELDS)
        tokenizer = lazy.get()
        ids = body.get("tokens")
        if not isinstance(ids, list) or not all(_is_token_id(t, len(tokenizer)) for t in ids):
            raise _bad(f"tokens must be a list of token ids in [0, {len(tokenizer)})", "tokens")
        return jsonify({"prompt": tokenizer.decode(ids)})

    @app.get("/tokenizer_info")
    @needs_key(settings)
    def tokenizer_info() -> Any:
        tokenizer = lazy.get()
        info = {name: _plain(getattr(tokenizer, name, None)) for name in INFO_FIELDS}
        return jsonify({"tokenizer_class": type(tokenizer).__name__, **{k: v for k, v in info.items() if v is not None}})


def _checked_body(settings: TransportSettings, allowed: set[str]) -> dict[str, Any]:
    body = json_body(request, settings.max_request_bytes)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _bad(f"unrecognized request argument(s): {', '.join(unknown)}")
    model = body.get("model")
    if model is not None and model not in (settings.deployment_name, settings.model_name):
        raise HttpError("not_found", f"the model {model!r} does not exist here; this server serves "
                        f"'{settings.deployment_name}' (GET /v1/models)", "model_not_found")
    return body


def _token_ids(tokenizer: Any, body: dict[str, Any]) -> list[int]:
    if ("prompt" in body) == ("messages" in body):
        raise _bad("give either 'prompt' (a string) or 'messages' (a chat)", "prompt")
    if "prompt" in body:
        if not isinstance(body["prompt"], str):
            raise _bad("prompt must be a string", "prompt")
        return tokenizer(body["prompt"], add_special_tokens=_flag(body, "add_special_tokens", True))["input_ids"]
    if not getattr(tokenizer, "chat_template", None):
        raise _bad("this model's tokenizer has no chat template, so messages cannot be tokenized: deploy it with "
                   "the model option chat_template (a Jinja template, or a file holding one)", "messages")
    try:
        options = ChatTemplateOptions.from_fields(body)
    except ChatOptionError as exc:
        raise _bad(str(exc), exc.field) from None
    try:
        return chat_token_ids(tokenizer, body["messages"], None, options)
    except ValueError as exc:
        raise _bad(str(exc), "messages") from None


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise _bad(f"{name} must be true or false, got {value!r}", name)
    return value


def _is_token_id(value: Any, vocab: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < vocab


def _max_length(tokenizer: Any) -> Optional[int]:
    length = getattr(tokenizer, "model_max_length", None)
    return length if isinstance(length, int) and length < 10**9 else None  # HF's "unset" is a huge number


def _plain(value: Any) -> Any:
    """JSON-able settings only (special tokens may be AddedToken objects: their text)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    content = getattr(value, "content", None)
    return content if isinstance(content, str) else None


def _bad(message: str, param: Optional[str] = None) -> HttpError:
    return HttpError("invalid", message, f"invalid_{param}" if param else None, param)
