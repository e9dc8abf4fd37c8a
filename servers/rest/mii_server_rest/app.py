"""The Flask app: MII's routes (``POST /mii/<deployment>``: generation, or an MII Legacy task's query
(``legacy_api.py``, with ``/v1/embeddings``); ``/healthz``, ``/terminate``), vLLM's
``/health`` and ``/version`` and its ``X-Request-Id`` echo, the OpenAI-compatible ``/v1`` routes (``openai_api.py``), vLLM's tokenizer routes
(``tokenizer_api.py``), and Prometheus ``/metrics``."""
from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from mii_core.serving.backend import Backend, Chunk, GenerateRequest
from mii_core.serving.transport import TransportSettings
from mii_core.serving.wire import response_to_wire
from mii_server_rest.auth import needs_key
from mii_server_rest.body import json_body
from mii_server_rest.errors import HttpError, error_response, from_exception
from mii_server_rest.gate import key_matches
from mii_server_rest.legacy_api import register_embeddings_route, task_query_answer
from mii_server_rest.metrics import Metrics
from mii_server_rest.openai_api import register_openai_routes
from mii_server_rest.origin import check_terminate_request, register_origin_rules
from mii_server_rest.request_id import register_request_ids
from mii_server_rest.sse import sse_response, sse_stream, start_stream
from mii_server_rest.tokenizer_api import LazyTokenizer, register_tokenizer_routes
from mii_server_rest.waiting import result_while_connected


def create_app(backend: Backend, settings: TransportSettings) -> Flask:
    app = Flask("mii_server_rest")
    app.config["MII"] = (backend, settings)
    metrics = Metrics(backend)
    _register_errors(app, settings, metrics)
    register_origin_rules(app, settings)
    register_request_ids(app)
    _register_mii_routes(app, backend, settings)
    _register_ops_routes(app, backend, settings, metrics)
    tokenizer = LazyTokenizer(settings.tokenizer or settings.model_name, settings.chat_template)  # on first use
    register_openai_routes(app, backend, settings, tokenizer)
    register_embeddings_route(app, backend, settings)
    register_tokenizer_routes(app, settings, tokenizer)
    return app


def _register_errors(app: Flask, settings: TransportSettings, metrics: Metrics) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        kind = "not_found" if exc.code == 404 else "invalid"
        response = error_response(kind, f"{exc.name}: {exc.description}", code=str(exc.code))
        response.status_code = exc.code or 400
        return response

    @app.errorhandler(Exception)
    def any_error(exc: Exception) -> Response:
        if isinstance(exc, HttpError):  # refused here, before the router saw it (which counts its own)
            metrics.request_ended(exc.kind)
        else:
            app.logger.debug("request failed", exc_info=exc)
        return from_exception(exc, settings.retry_after_seconds)


def _register_mii_routes(app: Flask, backend: Backend, settings: TransportSettings) -> None:
    @app.post("/mii/<deployment_name>")
    @needs_key(settings)
    def mii_generate(deployment_name: str) -> Any:
        if deployment_name != settings.deployment_name:
            here = settings.deployment_name
            raise HttpError("not_found", f"no deployment '{deployment_name}' here; this is '{here}' (POST /mii/{here})",
                            "deployment_not_found")
        body = json_body(request, settings.max_request_bytes)
        if settings.task is not None:  # an MII Legacy deployment: the body holds its task's keys
            return task_query_answer(backend, body)
        if "prompts" not in body:
            raise HttpError("invalid", "the body needs 'prompts': a string or a list of strings", "missing_prompts")
        prompts = body.pop("prompts")
        stream = body.pop("stream", False)
        if not isinstance(stream, bool):
            raise HttpError("invalid", f"'stream' must be true or false, got {stream!r}", "bad_stream")
        generate = GenerateRequest(prompts=[prompts] if isinstance(prompts, str) else prompts, options=body,
                                   stream=stream)
        if not stream:
            return jsonify([_mii_json(r) for r in result_while_connected(backend.submit(generate))])
        handle, first, rest = start_stream(backend, generate)
        return sse_response(sse_stream(handle, first, rest, _mii_piece, lambda: ()))


PRIVATE_HEALTH_KEYS = ("model", "pid", "rank_pids", "lost_reason")  # the model's path, process ids, errors


def without_private_details(health: dict[str, Any]) -> dict[str, Any]:
    """``/healthz`` for a caller without the key: status and counts, no model path, pids or error texts."""
    public = {k: v for k, v in health.items() if k not in PRIVATE_HEALTH_KEYS}
    if "replicas" in public:
        public["replicas"] = [without_private_details(replica) for replica in public["replicas"]]
    return public


def _mii_piece(event: Any) -> list[dict[str, Any]]:
    if isinstance(event, Chunk) and event.has_news:
        return [{"index": event.index, **_mii_json(event.response)}]
    return []


def _mii_json(response: Any) -> dict[str, Any]:
    """MII's four fields; ``logprobs`` and ``token_ids`` too where the request asked for logprobs (a
    streamed piece: those of its tokens), ``prompt_logprobs`` and ``prompt_token_ids`` where it asked
    for prompt_logprobs."""
    fields = response_to_wire(response)  # a new dict of the fields (asdict's deep copy is not needed)
    if response.logprobs is None:
        del fields["logprobs"], fields["token_ids"]
    if response.prompt_logprobs is None:
        del fields["prompt_logprobs"], fields["prompt_token_ids"]
    return fields


def _register_ops_routes(app: Flask, backend: Backend, settings: TransportSettings, metrics: Metrics) -> None:
    @app.get("/healthz")
    def healthz() -> Any:
        health = backend.health()
        status = health["status"]
        if settings.api_key is not None and not key_matches(request.headers.get("Authorization", ""),
                                                            settings.api_key):
            health = without_private_details(health)  # liveness stays open; where and who, behind the key
        response = jsonify(health)
        response.status_code = 200 if status in ("ok", "degraded") else 503
        return response

    @app.get("/health")
    def health() -> Any:
        """vLLM's liveness route (guidellm and others wait on it): 200 with no body while serving."""
        serving = backend.health()["status"] in ("ok", "degraded")
        return Response(status=200 if serving else 503)

    @app.get("/version")
    def version() -> Any:
        """vLLM's route: the server's version (mii-core's)."""
        from mii_core import __version__

        return jsonify({"version": __version__})

    @app.route("/terminate", methods=["GET", "POST"])
    @needs_key(settings)
    def terminate() -> Any:
        check_terminate_request(settings)
        backend.terminate()
        return jsonify({"status": "terminating", "deployment": settings.deployment_name})

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(metrics.render(), mimetype=metrics.content_type)
