"""OpenAI-compatible routes: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``.

Each request becomes one mii-core request of ``len(prompts) * n`` sequences (choice ``i * n + j`` is
prompt i's j-th completion, OpenAI's order). ``temperature=0`` is greedy; a ``seed`` with ``n > 1``
gives choice j the seed ``(seed + j) mod 2**64`` so the choices differ but repeat. Streams are Server-Sent
Events ending with ``data: [DONE]``; ``stream_options.include_usage`` adds the usage chunk.
``stream_options.continuous_usage_stats`` adds the usage so far to every chunk.
``logprobs`` (completions: 0..20 alternatives; chat: ``logprobs`` + ``top_logprobs``) are the raw
logits' log-probabilities (before penalties, biases and filters), as vLLM's default, streamed too (each
chunk those of its tokens). ``echo`` with ``logprobs`` scores the prompt first (its first token's logprob
null), and ``max_tokens=0`` with echo scores without generating; vLLM's ``prompt_logprobs`` (not streamed,
as in vLLM) goes in the completion's choice and at the top of a chat answer. A streamed echo is its own
first chunk. OpenAI's ``presence_penalty``, ``frequency_penalty`` and ``logit_bias`` and vLLM's extra
sampling fields (``VLLM_SAMPLING_FIELDS``, sent by the openai client in ``extra_body``) become the engine's
generation options of the same names, which check them (a bad value is a 400 naming the field).
Structured output (``response_format``, vLLM's ``guided_*``: structured.py) and tools on chat
(``tools``/``tool_choice``: tools.py, tool_parsers.py) become guides the engine's grammar masks enforce.
Parameters mii-core cannot honour yet (suffix) are refused with a 400 that names them, never silently
ignored.
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Iterable, Optional, Union

from flask import Flask, jsonify, request

from mii_core.config.generation import COUNT_LIMIT, SEED_LIMIT
from mii_core.response import Response
from mii_core.serving.backend import Backend, Chunk, GenerateRequest
from mii_core.serving.chat_prompt import ChatOptionError, ChatTemplateOptions
from mii_core.serving.transport import TransportSettings
from mii_server_rest.auth import needs_key
from mii_server_rest.body import json_body
from mii_server_rest.errors import HttpError
from mii_server_rest.openai_logprobs import Scoring, chat_logprobs, completion_logprobs, vllm_prompt_logprobs
from mii_server_rest.sse import sse_response, sse_stream, start_stream
from mii_server_rest.structured import GUIDED_FIELDS, guided_options
from mii_server_rest.tokenizer_api import LazyTokenizer
from mii_server_rest.tools import ToolRequest, template_messages, tool_request
from mii_server_rest.waiting import result_while_connected

# vLLM's extra sampling fields: passed to the engine under the same names (GenerationConfig checks them)
VLLM_SAMPLING_FIELDS = ("top_k", "min_p", "repetition_penalty", "min_tokens", "stop_token_ids", "bad_words",
                        "allowed_token_ids", "skip_special_tokens", "include_stop_str_in_output",
                        "truncate_prompt_tokens", "priority")
COMMON = {"model", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop", "seed", "user",
          "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "ignore_eos", *VLLM_SAMPLING_FIELDS,
          "response_format", *GUIDED_FIELDS}
COMPLETION_FIELDS = COMMON | {"prompt", "echo", "suffix", "best_of", "prompt_logprobs"}
CHAT_FIELDS = COMMON | {"messages", "max_completion_tokens", "top_logprobs", "tools",
                        "tool_choice", "parallel_tool_calls", "prompt_logprobs", "add_generation_prompt",
                        "continue_final_message", "chat_template_kwargs"}
MAX_N = 128
MAX_LOGPROBS = 20  # vLLM's default max_logprobs
STARTED_AT = int(time.time())


def bad(message: str, param: Optional[str] = None) -> HttpError:
    return HttpError("invalid", message, f"invalid_{param}" if param else None, param)


def register_openai_routes(app: Flask, backend: Backend, settings: TransportSettings,
                           tokenizer: LazyTokenizer) -> None:
    def decode(ids: list[int]) -> str:  # the first prompt token's text, a token-id prompt's echo
        return tokenizer.get().decode(ids)

    @app.get("/v1/models")
    @needs_key(settings)
    def models() -> Any:
        return jsonify({"object": "list", "data": [_model_object(settings)]})

    @app.get("/v1/models/<path:model_id>")  # path: a model name such as "org/name" holds a slash
    @needs_key(settings)
    def model(model_id: str) -> Any:
        if model_id not in (settings.deployment_name, settings.model_name):
            raise HttpError("not_found", f"the model {model_id!r} does not exist here; this server serves "
                            f"'{settings.deployment_name}' (GET /v1/models)", "model_not_found")
        return jsonify(_model_object(settings))

    @app.post("/v1/completions")
    @needs_key(settings)
    def completions() -> Any:
        body = json_body(request, settings.max_request_bytes)
        _check_fields(body, COMPLETION_FIELDS)
        scoring = Scoring(echo=_flag(body, "echo"), decode=decode)
        scoring.score_only = _score_only(body, scoring.echo)
        model, n, options = _common(body, settings, default_max_tokens=16)
        prompts = _prompts(body.get("prompt"))
        if body.get("suffix") is not None:
            raise bad("suffix is not supported", "suffix")
        best_of = _best_of(body, n)
        options["return_full_text"] = scoring.echo  # a stream's echo comes as its own chunk, score_only too
        scoring.logprobs = _integer(body, "logprobs", None, 0, MAX_LOGPROBS)
        scoring.prompt_logprobs = _prompt_logprobs(body)
        _add_logprobs(options, scoring)
        options.update(guided_options(body))
        as_ids = isinstance(prompts[0], list)  # token-id prompts (lm-eval sends these): no tokenizer on the way
        if scoring.score_only and not _flag(body, "stream"):  # the answer's text: the prompt without the token
            scoring.echo_texts = [decode(p) if as_ids else p for p in prompts]
        if best_of > n:
            options.setdefault("logprobs", 0)  # the ranking reads each generated token's logprob
        repeated = [p for p in prompts for _ in range(best_of)]
        generate = GenerateRequest(prompts=None if as_ids else repeated, prompt_ids=repeated if as_ids else None,
                                   options=_per_choice(options, len(prompts), best_of), stream=_flag(body, "stream"))
        return _answer(backend, generate, CompletionShape(model, len(prompts), n, scoring, best_of),
                       _usage_options(body))

    @app.post("/v1/chat/completions")
    @needs_key(settings)
    def chat_completions() -> Any:
        body = json_body(request, settings.max_request_bytes)
        _check_fields(body, CHAT_FIELDS)
        if body.get("max_completion_tokens") is not None:
            body["max_tokens"] = body["max_completion_tokens"]
        model, n, options = _common(body, settings, default_max_tokens=None)
        tools = tool_request(body, settings.tool_call_parser)
        options.update(_guide_with_tools(guided_options(body), tools))
        scoring = Scoring(logprobs=_chat_logprobs(body), prompt_logprobs=_prompt_logprobs(body))
        _add_logprobs(options, scoring)
        messages = template_messages(_messages(body.get("messages")))
        generate = GenerateRequest(chats=[messages] * n, options=_per_choice(options, 1, n),
                                   stream=_flag(body, "stream"), tools=tools.tools if tools else None,
                                   chat_template_options=_chat_template_options(body))
        return _answer(backend, generate, ChatShape(model, 1, n, scoring, tools), _usage_options(body))


def _chat_template_options(body: dict[str, Any]) -> dict[str, Any]:
    try:
        return ChatTemplateOptions.from_fields(body).to_wire()
    except ChatOptionError as exc:
        raise bad(str(exc), exc.field) from None


def _model_object(settings: TransportSettings) -> dict[str, Any]:
    return {"id": settings.deployment_name, "object": "model", "created": STARTED_AT, "owned_by": "mii-core",
            "root": settings.model_name}


# ---- reading the request ----

def _check_fields(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise bad(f"unrecognized request argument(s): {', '.join(unknown)}")


def _common(body: dict[str, Any], settings: TransportSettings,
            default_max_tokens: Optional[int]) -> tuple[str, int, dict[str, Any]]:
    if not isinstance(body.get("user", ""), str):
        raise bad(f"user must be a string, got {body['user']!r:.100}", "user")
    model = body.get("model")
    if model not in (settings.deployment_name, settings.model_name):
        raise HttpError("not_found", f"the model {model!r} does not exist here; this server serves "
                        f"'{settings.deployment_name}' (GET /v1/models)", "model_not_found")
    n = _integer(body, "n", 1, 1, MAX_N)
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    options: dict[str, Any] = {"do_sample": temperature > 0, "top_p": _number(body, "top_p", 1.0, 0.0, 1.0)}
    if options["top_p"] == 0:
        raise bad("top_p must be above 0", "top_p")
    if temperature > 0 and temperature != 1.0:
        options["temperature"] = temperature
    max_tokens = _integer(body, "max_tokens", default_max_tokens, 1, COUNT_LIMIT)
    if max_tokens is not None:
        options["max_new_tokens"] = max_tokens
    if body.get("stop") is not None:
        stop = body["stop"]
        if not (isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))):
            raise bad("stop must be a string or a list of strings", "stop")
        options["stop"] = stop
    if body.get("seed") is not None:
        options["seed"] = _integer(body, "seed", None, 0, SEED_LIMIT - 1)
    if _flag(body, "ignore_eos"):  # vLLM's extra field: generate max_tokens whatever the model says
        options["ignore_eos"] = True
    options.update(_sampling_fields(body))
    return model, n, options


def _sampling_fields(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's penalties and logit_bias and vLLM's extra fields, as given (None: the engine's default)."""
    fields = {name: body[name] for name in VLLM_SAMPLING_FIELDS if body.get(name) is not None}
    for name in ("presence_penalty", "frequency_penalty"):
        penalty = _number(body, name, 0.0, -2.0, 2.0)
        if penalty:
            fields[name] = penalty
    if body.get("logit_bias"):  # {} or null: no bias
        fields["logit_bias"] = body["logit_bias"]
    return fields


def _integer(body: dict[str, Any], name: str, default: Optional[int], low: Optional[int],
             high: Optional[int]) -> Optional[int]:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"{name} must be an integer, got {value!r}", name)
    if (low is not None and value < low) or (high is not None and value > high):
        raise bad(f"{name} must be in [{low}, {high if high is not None else '∞'}], got {value}", name)
    return value


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad(f"{name} must be a number, got {value!r}", name)
    if not low <= value <= high:
        raise bad(f"{name} must be in [{low}, {high}], got {value}", name)
    return float(value)


def _chat_logprobs(body: dict[str, Any]) -> Optional[int]:
    """Chat's pair: ``logprobs`` (true/false) and ``top_logprobs`` (alternatives, 0..20, only with logprobs)."""
    top = _integer(body, "top_logprobs", None, 0, MAX_LOGPROBS)
    if not _flag(body, "logprobs"):
        if top is not None:
            raise bad("top_logprobs needs logprobs: true", "top_logprobs")
        return None
    return top or 0


def _add_logprobs(options: dict[str, Any], scoring: Scoring) -> None:
    """The engine's options for what ``scoring`` asks: the generated tokens' and the prompt's logprobs."""
    if scoring.logprobs is not None:
        options["logprobs"] = scoring.logprobs
    if scoring.engine_prompt_logprobs() is not None:
        options["prompt_logprobs"] = scoring.engine_prompt_logprobs()


def _prompt_logprobs(body: dict[str, Any]) -> Optional[int]:
    """vLLM's extra field: alternatives per prompt token (0..20); not with stream, as vLLM refuses it."""
    count = _integer(body, "prompt_logprobs", None, 0, MAX_LOGPROBS)
    if count is not None and _flag(body, "stream"):
        raise bad("prompt_logprobs are not available with stream (as in vLLM); ask without stream, or use echo "
                  "with logprobs", "prompt_logprobs")
    return count


def _score_only(body: dict[str, Any], echo: bool) -> bool:
    """``max_tokens=0`` with echo: the prompt scored, nothing generated. The engine generates one token
    (its logits come with the prompt's last chunk anyway), which the answer leaves out."""
    value = body.get("max_tokens")
    if isinstance(value, bool) or value != 0:
        return False
    if not echo:
        raise bad("max_tokens=0 (scoring the prompt without generating) needs echo: true; otherwise max_tokens "
                  "must be at least 1", "max_tokens")
    body["max_tokens"] = 1
    return True


def _guide_with_tools(guide: dict[str, Any], tools: Optional[ToolRequest]) -> dict[str, Any]:
    """The request's guide, or the one that forces its tool calls (tool_choice required or a function)."""
    forced = tools.guide() if tools else {}
    if forced and guide:
        raise bad(f"tool_choice {tools.choice} forces the output's shape; it cannot be combined with "
                  "response_format or guided_* fields", "tool_choice")
    return forced or guide


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad(f"{name} must be true or false, got {value!r}", name)
    return value


def _usage_options(body: dict[str, Any]) -> tuple[bool, bool]:
    """(a usage chunk at the end: ``include_usage``, the usage so far in every chunk: ``continuous_usage_stats``)."""
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad("stream_options must be an object", "stream_options")
    return bool(options.get("include_usage")), bool(options.get("continuous_usage_stats"))


def _prompts(prompt: Any) -> Union[list[str], list[list[int]]]:
    """OpenAI's four prompt shapes: a string, a list of strings, a list of token ids, a list of such lists."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return prompt
    if isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, list) and p and all(_is_int(t) for t in p)
                                                   for p in prompt):
        return prompt
    raise bad("prompt must be a non-empty string, a list of strings, a non-empty list of token ids (integers) "
              "or a list of such lists", "prompt")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# what a message may carry besides role and content: an assistant's tool calls, a tool result's call id and name
MESSAGE_TOOL_FIELDS = ("tool_calls", "tool_call_id", "name")


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise bad("messages must be a non-empty list of {role, content} objects", "messages")
    plain = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad(f"messages[{i}] must be an object with a string 'role'", "messages")
        extra = {name: message[name] for name in MESSAGE_TOOL_FIELDS if message.get(name) is not None}
        if not isinstance(extra.get("tool_calls", []), list):
            raise bad(f"messages[{i}].tool_calls must be a list of tool calls", "messages")
        plain.append({"role": message["role"], "content": _content_text(message.get("content"), i), **extra})
    return plain


def _content_text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise bad(f"messages[{index}].content must be a string or a list of text parts (images etc. are not "
              "supported)", "messages")


def _best_of(body: dict[str, Any], n: int) -> int:
    """OpenAI's best_of: completions generated per prompt, of which the n of highest log-probability are
    returned (vLLM v0's ranking: the sum over the generated tokens); at least n, and not streamed."""
    best_of = _integer(body, "best_of", n, 1, MAX_N)
    if best_of < n:
        raise bad(f"best_of ({best_of}) must be at least n ({n})", "best_of")
    if best_of > n and _flag(body, "stream"):
        raise bad("best_of greater than n cannot be streamed (OpenAI's rule): ask without stream", "best_of")
    return best_of


def _summed_logprob(response: Response) -> float:
    return sum(entry["logprob"] for entry in response.logprobs or [])


def _per_choice(options: dict[str, Any], prompts: int, n: int) -> Any:
    if n == 1 or options.get("seed") is None or not options.get("do_sample"):
        return options
    # modulo: a seed near the top of the range still gives every choice a valid (and distinct) seed
    return [{**options, "seed": (options["seed"] + j) % SEED_LIMIT} for _ in range(prompts) for j in range(n)]


# ---- writing the answer ----

class CompletionShape:
    """The JSON of /v1/completions answers; ChatShape overrides what differs. Holds a stream's text
    offsets per choice, so the logprobs' ``text_offset`` runs on across its chunks."""

    object_name, chunk_object, id_prefix = "text_completion", "text_completion", "cmpl"

    def __init__(self, model: str, prompts: int, n: int, scoring: Scoring, best_of: Optional[int] = None) -> None:
        self.model, self.prompts, self.n, self.scoring = model, prompts, n, scoring
        self.best_of = best_of or n  # completions generated per prompt, of which n are answered
        self.id, self.created = f"{self.id_prefix}-{uuid.uuid4().hex}", int(time.time())
        self.offsets: dict[int, int] = {}

    def envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices}

    def select(self, responses: list[Response]) -> list[Response]:
        """The n answered of each prompt's best_of completions: those of highest summed logprob, in that order."""
        if self.best_of == self.n:
            return responses
        groups = [responses[i:i + self.best_of] for i in range(0, len(responses), self.best_of)]
        ranked = (sorted(group, key=_summed_logprob, reverse=True) for group in groups)
        return [response for group in ranked for response in group[:self.n]]

    def extra(self, responses: list[Response]) -> dict[str, Any]:
        """Fields of a whole answer besides its choices (chat's prompt_logprobs)."""
        return {}

    def choice(self, index: int, response: Response) -> dict[str, Any]:
        scoring = self.scoring
        text = scoring.echo_texts[index // self.n] if scoring.score_only else response.generated_text
        entries, logprobs = self._entries(response), None
        if entries is not None:
            logprobs, _ = completion_logprobs(entries, scoring.logprobs)
        choice = {"index": index, "text": text, "logprobs": logprobs,
                  "finish_reason": "length" if scoring.score_only else response.finish_reason}
        if scoring.prompt_logprobs is not None:
            choice["prompt_logprobs"] = vllm_prompt_logprobs(response.prompt_logprobs, scoring.prompt_logprobs)
        return choice

    def _entries(self, response: Response) -> Optional[list[dict[str, Any]]]:
        """The answer's logprob entries: the prompt's where echoed, then the generated tokens' (none when only
        scoring); None where logprobs were not asked."""
        scoring = self.scoring
        if scoring.logprobs is None:
            return None
        generated = [] if scoring.score_only else response.logprobs or []
        if not scoring.echo:
            return generated
        return scoring.prompt_entries(response.prompt_logprobs, response.prompt_token_ids) + generated

    def first_pieces(self, index: int) -> list[dict[str, Any]]:
        return []

    def prompt_piece(self, index: int, response: Response) -> list[dict[str, Any]]:
        """A stream's echoed prompt, a chunk of its own, with its tokens' logprobs where asked."""
        logprobs = None
        if self.scoring.logprobs is not None:
            entries = self.scoring.prompt_entries(response.prompt_logprobs, response.prompt_token_ids)
            logprobs, self.offsets[index] = completion_logprobs(entries, self.scoring.logprobs)
        return [{"index": index, "text": response.generated_text, "logprobs": logprobs, "finish_reason": None}]

    def piece(self, index: int, response: Response, final: Optional[str]) -> list[dict[str, Any]]:
        """A stream's chunk of generated text, with its tokens' logprobs where asked (none when only scoring)."""
        if self.scoring.score_only:
            return [{"index": index, "text": "", "logprobs": None, "finish_reason": "length"}] if final else []
        entries, logprobs = response.logprobs if self.scoring.logprobs is not None else None, None
        if not (response.generated_text or final or entries):
            return []
        if entries is not None:
            logprobs, self.offsets[index] = completion_logprobs(entries, self.scoring.logprobs,
                                                                self.offsets.get(index, 0))
        return [{"index": index, "text": response.generated_text, "logprobs": logprobs, "finish_reason": final}]

    def usage(self, prompt_lengths: dict[int, int], generated: dict[int, int]) -> dict[str, int]:
        prompt_tokens = sum(length for i, length in prompt_lengths.items() if i % self.best_of == 0)
        completion_tokens = 0 if self.scoring.score_only else sum(generated.values())
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}


class ChatShape(CompletionShape):
    """Chat answers; with tools, a finished output's tool calls (parsed by the deployment's tool-call
    parser) become ``message.tool_calls``, and a stream holds back text where a call may begin."""

    object_name, chunk_object, id_prefix = "chat.completion", "chat.completion.chunk", "chatcmpl"

    def __init__(self, model: str, prompts: int, n: int, scoring: Scoring,
                 tools: Optional[ToolRequest] = None) -> None:
        super().__init__(model, prompts, n, scoring)
        self.tools = tools
        self.streamed: dict[int, str] = {}  # per choice, the text streamed so far (tools: read at the end)
        self.shown: dict[int, int] = {}  # per choice, how much of it was sent as content

    def extra(self, responses: list[Response]) -> dict[str, Any]:
        """vLLM puts a chat's prompt_logprobs beside its choices (the choices share the prompt)."""
        if self.scoring.prompt_logprobs is None:
            return {}
        return {"prompt_logprobs": vllm_prompt_logprobs(responses[0].prompt_logprobs, self.scoring.prompt_logprobs)}

    def choice(self, index: int, response: Response) -> dict[str, Any]:
        finish_reason = response.finish_reason
        message: dict[str, Any] = {"role": "assistant", "content": response.generated_text}
        content, calls = self._calls(response.generated_text, finish_reason)
        if calls:
            message, finish_reason = {"role": "assistant", "content": content, "tool_calls": calls}, "tool_calls"
        return {"index": index, "message": message, "logprobs": self._chat_logprobs(response),
                "finish_reason": finish_reason}

    def _calls(self, text: str, finish_reason: Optional[str]) -> tuple[Optional[str], list[dict[str, Any]]]:
        """The tool calls of a finished output (none without tools, or when cut off by max_tokens)."""
        if self.tools is None or finish_reason in (None, "length"):
            return text, []
        return self.tools.calls(text)

    def _chat_logprobs(self, response: Response) -> Optional[dict[str, Any]]:
        if self.scoring.logprobs is None:
            return None
        return chat_logprobs(response.logprobs or [], self.scoring.logprobs)

    def first_pieces(self, index: int) -> list[dict[str, Any]]:
        return [{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                 "finish_reason": None}]

    def prompt_piece(self, index: int, response: Response) -> list[dict[str, Any]]:
        return []  # chat neither echoes nor streams prompt logprobs

    def piece(self, index: int, response: Response, final: Optional[str]) -> list[dict[str, Any]]:
        if self.tools is not None:
            return self._tool_pieces(index, response.generated_text, final)
        logprobs = self._chat_logprobs(response)
        if not (response.generated_text or final or (logprobs and logprobs["content"])):
            return []
        return [self._delta(index, response.generated_text, final, logprobs)]

    @staticmethod
    def _delta(index: int, text: str, final: Optional[str], logprobs: Optional[dict[str, Any]] = None) -> dict:
        delta = {"content": text} if text else {}
        return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": final}

    def _tool_pieces(self, index: int, text: str, final: Optional[str]) -> list[dict[str, Any]]:
        """With tools, content is sent up to where a call may begin; at the end the calls come as one
        ``tool_calls`` delta (each with its index, id, name and arguments), then the finish. (Streamed
        logprobs are not sent with tools.)"""
        total = self.streamed[index] = self.streamed.get(index, "") + text
        shown = self.shown.get(index, 0)
        content, calls = self._calls(total, final)
        until = len(total) if final and not calls else max(self.tools.holds_back(total), shown)
        if calls:
            until = max(shown, len(content or ""))
        self.shown[index] = until
        out = [self._delta(index, total[shown:until], None)] if until > shown else []
        if calls:
            deltas = [{"index": k, **call} for k, call in enumerate(calls)]
            out.append({"index": index, "delta": {"tool_calls": deltas}, "logprobs": None, "finish_reason": None})
        if final:
            out.append(self._delta(index, "", "tool_calls" if calls else final))
        return out


def _answer(backend: Backend, generate: GenerateRequest, shape: CompletionShape, usage: tuple[bool, bool]) -> Any:
    if not generate.stream:
        responses = result_while_connected(backend.submit(generate))
        # usage counts every completion generated (best_of's unanswered ones too: they were computed)
        totals = shape.usage({i: r.prompt_length for i, r in enumerate(responses)},
                             {i: r.generated_length for i, r in enumerate(responses)})
        responses = shape.select(responses)
        choices = [shape.choice(i, r) for i, r in enumerate(responses)]
        return jsonify({**shape.envelope(shape.object_name, choices), **shape.extra(responses), "usage": totals})
    stream, first, rest = start_stream(backend, generate)
    render, closing = _stream_renderer(shape, *usage)
    return sse_response(sse_stream(stream, first, rest, render, closing))


def _stream_renderer(shape: CompletionShape, include_usage: bool, continuous: bool) -> tuple[Callable, Callable]:
    """``continuous``: each chunk also carries the usage so far (vLLM's ``continuous_usage_stats``)."""
    seen: set[int] = set()
    prompt_lengths: dict[int, int] = {}
    generated: dict[int, int] = {}

    def render(event: Any) -> Iterable[dict[str, Any]]:
        if not isinstance(event, Chunk):
            return []
        index, response = event.index, event.response
        prompt_lengths[index], generated[index] = response.prompt_length, response.generated_length
        pieces = []
        if index not in seen:
            seen.add(index)
            pieces.extend(shape.first_pieces(index))
        if response.generated_length == 0:  # a generated piece has a token: this is the prompt's own
            pieces.extend(shape.prompt_piece(index, response))
        else:
            pieces.extend(shape.piece(index, response, response.finish_reason if response.finish_reason != "none"
                                      else None))
        usage = {"usage": shape.usage(prompt_lengths, generated)} if continuous else {}
        return [{**shape.envelope(shape.chunk_object, [p]), **usage} for p in pieces]

    def closing() -> Iterable[dict[str, Any]]:
        if not include_usage:
            return []
        return [{**shape.envelope(shape.chunk_object, []), "usage": shape.usage(prompt_lengths, generated)}]

    return render, closing
