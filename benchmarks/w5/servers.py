"""The servers W5 measures: our deployment (mii_core.serve with the OpenAI REST and the gRPC front ends) and
the peer, HF transformers' own server (`transformers serve --continuous-batching`), on the same checkpoint.
Each start returns the load generator's targets (loadgen's dicts) and a stop function."""

import os
import subprocess
import sys
import time
import types
import urllib.request

from phases import stop_group
from serve_w1 import end_deployment, free_port_block, rendezvous_port

PEER_READY_TIMEOUT_S = 300


OURS_NAME = "w5-bench"  # the deployment's name: its processes are found by it (w5/processes.py)


def start_ours(path, engine_kwargs, server_threads, deployment_name=OURS_NAME):
    """(targets {"http": ..., "grpc": ...}, stop()) of a one-replica deployment with both front ends.
    server_threads: MII's restful_processes, the worker threads of each front end; a streamed request holds
    one from start to end, so it bounds the streams in flight (W1 sends 256 at once; MII's default is 32)."""
    import mii_core
    base = free_port_block(4)
    client = mii_core.serve(path, deployment_name=deployment_name, replica_num=1, port_number=base,
                            enable_restful_api=True, restful_api_host="127.0.0.1", restful_api_port=base + 3,
                            restful_processes=server_threads, host="127.0.0.1", torch_dist_port=rendezvous_port(),
                            **engine_kwargs)
    ends = client.record.front_ends
    rest_host, rest_port = ends["rest"]
    grpc_host, grpc_port = ends["grpc"]
    targets = {"http": {"kind": "openai", "address": f"http://{rest_host}:{rest_port}/v1",
                        "model": deployment_name, "style": "mii"},
               "grpc": {"kind": "grpc", "address": f"{grpc_host}:{grpc_port}", "model": deployment_name,
                        "style": "mii"}}
    errors = types.SimpleNamespace(part={"errors": {}}, save=lambda: None)  # what end_deployment reports into

    def stop():
        end_deployment(client, deployment_name, errors)
        return errors.part["errors"]
    return targets, stop


def peer_command(path, port, tiny):
    """`transformers serve` through its Python entry point (the console script may not be on PATH)."""
    entry = "from transformers.cli.transformers import main; main()"
    command = [sys.executable, "-c", entry, "serve", path, "--continuous-batching", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
    return command + (["--device", "cpu", "--dtype", "float32"] if tiny else ["--device", "cuda:0",
                                                                               "--dtype", "bfloat16"])


def wait_for_http(url, proc, log_file, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the peer server exited with code {proc.returncode}: {tail(log_file)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the peer server did not answer {url} within {timeout_s} s: {tail(log_file)}")


def tail(log_file, chars=1500):
    with open(log_file, errors="replace") as f:
        return f.read()[-chars:]


def ensure_hub_cache():
    """The hub's cache folder, made if missing: `transformers serve` answers /v1/models by scanning it, and
    on a machine that never downloaded a model (the lent H200) the scan raised CacheNotFound on every poll,
    so the peer never looked ready and its runs were lost."""
    from huggingface_hub import constants
    os.makedirs(constants.HF_HUB_CACHE, exist_ok=True)


def start_peer(path, log_dir, tiny):
    """(targets {"http": ...}, stop()) of `transformers serve` with continuous batching on the checkpoint."""
    port = free_port_block(1)
    log_file = os.path.join(log_dir, "peer_server.log")
    ensure_hub_cache()
    with open(log_file, "w") as log:
        proc = subprocess.Popen(peer_command(path, port, tiny), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/v1/models", proc, log_file, PEER_READY_TIMEOUT_S)
    except Exception:
        stop_group(proc)
        raise
    targets = {"http": {"kind": "openai", "address": f"http://127.0.0.1:{port}/v1", "model": path, "style": "hf"}}

    def stop():
        stop_group(proc)
        return {}
    return targets, stop
