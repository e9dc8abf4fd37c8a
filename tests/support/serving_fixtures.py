"""Deployments for the serving and security tests: real processes on loopback, tiny checkpoints, a private
cache. Loaded once for the whole session by the root conftest (``pytest_plugins``), so that a session-scoped
deployment such as ``demo`` exists once per session: defined in two conftests, it was two fixtures, and a
pytest-xdist worker that ran a serving file and then a security file started a second "demo" beside the
first, which the deployment's name check refuses."""

from __future__ import annotations

import os

import pytest

from support.serving import SMALL_KV, free_port_block, kill_group


@pytest.fixture(scope="session", autouse=True)
def mii_cache(tmp_path_factory):
    """Every deployment of the session keeps its metadata in a private MII_CACHE_PATH."""
    path = tmp_path_factory.mktemp("mii_cache")
    old = os.environ.get("MII_CACHE_PATH")
    os.environ["MII_CACHE_PATH"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MII_CACHE_PATH", None)
    else:
        os.environ["MII_CACHE_PATH"] = old


@pytest.fixture(scope="session")
def deploy():
    """deploy(path, **options) -> client of a new deployment on free ports; all ended at session end."""
    import mii_core

    clients = []

    def start(path, replica_num=1, **options):
        base = free_port_block(3 + replica_num)
        options.setdefault("port_number", base)
        options.setdefault("inference_engine_config", SMALL_KV)
        if options.get("enable_restful_api") or "rest" in (options.get("transports") or []):
            options.setdefault("restful_api_port", base + 2 + replica_num)
        client = mii_core.serve(str(path), replica_num=replica_num, **options)
        clients.append(client)
        return client

    yield start
    for client in clients:
        try:
            client.terminate_server(timeout=20)
        except Exception:
            pass
        if client.record.router_pid:
            kill_group(client.record.router_pid)


# A chat template made of characters the tiny tokenizer knows (no newline: it has no token for it).
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} | {% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


@pytest.fixture(scope="session")
def chat_checkpoint(checkpoint, tmp_path_factory):
    """The gqa checkpoint with a chat template in its tokenizer config (for /v1/chat/completions)."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("chat") / "tiny-chat-llama"
    shutil.copytree(checkpoint("gqa"), folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["chat_template"] = CHAT_TEMPLATE
    config_file.write_text(json.dumps(config, indent=2))
    return folder


@pytest.fixture(scope="session")
def demo(chat_checkpoint, deploy):
    """The issue's sample deployment: named "demo", REST on 28080 (another free port if taken, and on every
    pytest-xdist worker but the first, which takes 28080), two replicas, gRPC on port_number; shared by the
    REST, gRPC, OpenAI and load tests."""
    from support.serving import DEMO_REST_PORT, free_port_block, port_free, xdist_worker

    first_worker = xdist_worker()[0] == 0
    rest_port = DEMO_REST_PORT if first_worker and port_free(DEMO_REST_PORT) else free_port_block(1)
    client = deploy(chat_checkpoint, replica_num=2, deployment_name="demo", enable_restful_api=True,
                    restful_api_port=rest_port)
    return client


@pytest.fixture(scope="module")
def api(demo, chat_checkpoint, oracle):
    """The demo deployment through the official openai client: (client, HF oracle, the REST base URL)."""
    import openai

    host, port = demo.record.front_ends["rest"]
    client = openai.OpenAI(base_url=f"http://localhost:{port}/v1", api_key="unused", max_retries=0, timeout=120)
    return client, oracle(chat_checkpoint), f"http://localhost:{port}"


# renders the tools and the tool calls of earlier turns, with characters the tiny tokenizer knows
TOOLS_TEMPLATE = ("{{ bos_token }}{% if tools %}tools: {% for t in tools %}{{ t['function']['name'] }} {% endfor %}"
                  "| {% endif %}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% for c in "
                  "m.tool_calls or [] %} call {{ c['function']['name'] }}{% endfor %} | {% endfor %}"
                  "{% if add_generation_prompt %}assistant:{% endif %}")


@pytest.fixture(scope="session")
def tools_checkpoint(chat_checkpoint, tmp_path_factory):
    """The chat checkpoint with a template that renders tools and earlier tool calls."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("tools") / "tiny-tools-llama"
    shutil.copytree(chat_checkpoint, folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["chat_template"] = TOOLS_TEMPLATE
    config_file.write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="session")
def tools_server(tools_checkpoint, deploy):
    """A deployment reading hermes tool calls (tool_call_parser), its OpenAI base URL."""
    client = deploy(tools_checkpoint, deployment_name="tools", enable_restful_api=True, tool_call_parser="hermes")
    host, port = client.record.front_ends["rest"]
    return f"http://localhost:{port}/v1"
