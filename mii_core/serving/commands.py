"""``mii-core serve`` (a deployment in the foreground until Ctrl-C) and ``mii-core generate``."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

API_KEY_ENV = "MII_CORE_API_KEY"  # so the key need not show in the process list
KEY_IN_ARGV_WARNING = ("mii-core serve: warning: --api-key on the command line is readable by every local user "
                       f"(ps, /proc/<pid>/cmdline); pass it in ${API_KEY_ENV} or --api-key-file instead")


def add_serving_commands(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run a deployment in the foreground until Ctrl-C",
                           description="Starts a persistent deployment (as mii_core.serve) and keeps it until "
                                       "Ctrl-C or SIGTERM, then shuts every process down.")
    serve.add_argument("model", help="checkpoint folder or hub id")
    serve.add_argument("--deployment-name", default="", help="default: <model basename>-mii-deployment")
    serve.add_argument("--replica-num", type=int, default=1)
    serve.add_argument("--tensor-parallel", type=int, default=None)
    serve.add_argument("--port", type=int, default=None, help="port_number: the gRPC front end (50050)")
    serve.add_argument("--host", default=None, help="address the gRPC front end listens on (localhost)")
    serve.add_argument("--rest-port", type=int, default=None, help="enable REST on this port (MII: 51080)")
    serve.add_argument("--rest-host", default=None, help="address the REST front end listens on (localhost)")
    serve.add_argument("--transports", default=None, help="comma-separated front ends (default: grpc)")
    serve.add_argument("--api-key", default=None,
                       help=f"require this key (visible in ps: prefer ${API_KEY_ENV} or --api-key-file)")
    serve.add_argument("--api-key-file", default=None, help="require the key held in this file (its first line)")
    serve.add_argument("--max-queued-requests", type=int, default=None)
    serve.add_argument("--max-length", type=int, default=None)
    serve.add_argument("--device-map", default=None, help='JSON, e.g. "[[0], [1]]" (default: auto)')
    serve.add_argument("--chat-template", default=None,
                       help="a Jinja chat template, or a file holding one (vLLM's flag; model option chat_template)")
    serve.add_argument("--tool-call-parser", default=None, choices=["hermes", "llama3_json"],
                       help="how tool calls are read from chat output under tool_choice auto (vLLM's flag; model "
                            "option tool_call_parser)")
    serve.add_argument("--config", default=None, help="mii_config JSON file; flags override it")
    serve.add_argument("--model-option", action="append", default=[], metavar="KEY=JSON",
                       help="any other model option, e.g. inference_engine_config='{...}' (repeatable)")
    generate = sub.add_parser("generate", help="send prompts to a running deployment",
                              description="Sends prompts to a deployment (by name or model) and prints the answers.")
    generate.add_argument("deployment", help="deployment name (or the model it serves)")
    generate.add_argument("prompts", nargs="+")
    generate.add_argument("--max-new-tokens", type=int, default=None)
    generate.add_argument("--max-length", type=int, default=None)
    generate.add_argument("--greedy", action="store_true", help="do_sample=False")
    generate.add_argument("--ignore-eos", action="store_true")
    generate.add_argument("--temperature", type=float, default=None)
    generate.add_argument("--top-p", type=float, default=None)
    generate.add_argument("--top-k", type=int, default=None)
    generate.add_argument("--stop", action="append", default=None, help="a stop string (repeatable)")
    generate.add_argument("--seed", type=int, default=None)
    generate.add_argument("--stream", action="store_true", help="print the text as it comes (one prompt)")
    generate.add_argument("--json", action="store_true", help="print the Responses as JSON")


def run_serving_command(args: argparse.Namespace) -> int:
    return serve_command(args) if args.command == "serve" else generate_command(args)


def _serve_options(args: argparse.Namespace) -> dict[str, Any]:
    flags = {"deployment_name": args.deployment_name or None, "replica_num": args.replica_num,
             "tensor_parallel": args.tensor_parallel, "port_number": args.port, "host": args.host,
             "restful_api_host": args.rest_host, "api_key": _api_key(args),
             "max_queued_requests": args.max_queued_requests, "max_length": args.max_length,
             "chat_template": args.chat_template, "tool_call_parser": args.tool_call_parser}
    options = {key: value for key, value in flags.items() if value is not None}
    if args.rest_port is not None:
        options.update(enable_restful_api=True, restful_api_port=args.rest_port)
    if args.transports is not None:
        options["transports"] = [t.strip() for t in args.transports.split(",") if t.strip()]
    if args.device_map is not None:
        options["device_map"] = _json_value(args.device_map)
    for item in args.model_option:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--model-option {item!r}: write KEY=VALUE (VALUE as JSON)")
        options[key] = _json_value(value)
    return options


def _api_key(args: argparse.Namespace) -> str | None:
    """The key from --api-key-file, $MII_CORE_API_KEY or (with a warning) --api-key; at most one of them."""
    given = [name for name, value in (("--api-key-file", args.api_key_file), (f"${API_KEY_ENV}", os.getenv(API_KEY_ENV)),
                                      ("--api-key", args.api_key)) if value]
    if len(given) > 1:
        raise ValueError(f"the API key is given twice ({' and '.join(given)}); give it once")
    if args.api_key:
        print(KEY_IN_ARGV_WARNING, file=sys.stderr, flush=True)
        return args.api_key
    if args.api_key_file:
        return _read_key_file(args.api_key_file)
    return os.getenv(API_KEY_ENV) or None


def _read_key_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as key_file:
            key = key_file.readline().strip()
    except OSError as exc:
        raise ValueError(f"--api-key-file {path}: cannot read it ({exc.strerror})") from None
    if not key:
        raise ValueError(f"--api-key-file {path}: its first line is empty; write the key there")
    return key


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word (e.g. a dtype) is its own value


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the deployment as Ctrl-C does


def serve_command(args: argparse.Namespace) -> int:
    from mii_core.serving.deploy import serve  # not through mii_core: serving never imports the pipeline

    try:
        client = serve(args.model, mii_config=args.config, **_serve_options(args))
    except (ValueError, TypeError, RuntimeError) as exc:
        print(f"mii-core serve: {exc}", file=sys.stderr)
        return 2
    ends = ", ".join(f"{name} {host}:{port}" for name, (host, port) in client.record.front_ends.items())
    print(f"deployment '{client.deployment_name}' ready ({ends or 'no front end'}); Ctrl-C to stop", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    # Ctrl-C must stop it even when started with SIGINT ignored (a background job of a script, or a parent
    # that ignored it: a child inherits that, and Python then installs no KeyboardInterrupt of its own)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = 0
    try:
        while _still_running(client):
            time.sleep(0.5)
        print(f"deployment '{client.deployment_name}' stopped", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        pass
    print(f"stopping deployment '{client.deployment_name}'", flush=True)
    client.terminate_server()
    print("stopped", flush=True)
    return code


def _still_running(client: Any) -> bool:
    from mii_core.serving.metadata import process_alive

    return process_alive(client.record.router_pid)


def generate_command(args: argparse.Namespace) -> int:
    from mii_core.serving.client import client as deployment_client

    options = {"max_new_tokens": args.max_new_tokens, "max_length": args.max_length, "temperature": args.temperature,
               "top_p": args.top_p, "top_k": args.top_k, "stop": args.stop, "seed": args.seed}
    options = {key: value for key, value in options.items() if value is not None}
    if args.greedy:
        options["do_sample"] = False
    if args.ignore_eos:
        options["ignore_eos"] = True
    try:
        client = deployment_client(args.deployment)
        streaming_fn = _print_piece if args.stream else None
        responses = client.generate(args.prompts, streaming_fn=streaming_fn, **options)
    except (ValueError, TypeError, RuntimeError) as exc:
        print(f"mii-core generate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([vars(r) for r in responses]))
    elif args.stream:
        print()
    else:
        for response in responses:
            print(response.generated_text)
    return 0


def _print_piece(responses: list) -> None:
    print(responses[0].generated_text, end="", flush=True)
