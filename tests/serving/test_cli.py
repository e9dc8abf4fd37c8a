"""`mii-core serve` in the foreground until Ctrl-C, and `mii-core generate`, as a user runs them."""

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from support.serving import SMALL_KV, free_port_block, pid_alive, port_free, wait_until

CLI = [sys.executable, "-m", "mii_core"]


@pytest.fixture(scope="module")
def cli_deployment(checkpoint, oracle):
    path = checkpoint("gqa")
    base = free_port_block(5)
    server = subprocess.Popen(
        CLI + ["serve", str(path), "--deployment-name", "cli-demo", "--port", str(base), "--rest-port", str(base + 3),
               "--model-option", f"inference_engine_config={json.dumps(SMALL_KV)}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ)
    ready = server.stdout.readline()
    assert "deployment 'cli-demo' ready" in ready, ready
    # the router and replicas share this pipe (loading bars, logs): drain it, or a full pipe blocks them
    server.output = []
    reader = threading.Thread(target=lambda: server.output.extend(server.stdout), daemon=True)
    reader.start()
    server.reader = reader
    yield server, base, oracle(path)
    if server.poll() is None:
        server.kill()


def generate(*args):
    return subprocess.run(CLI + ["generate", "cli-demo", *args], capture_output=True, text=True, timeout=120,
                          env=os.environ)


def test_generate_prints_the_answers(cli_deployment):
    _, _, hf = cli_deployment
    done = generate("The old man", "river", "--max-new-tokens", "8", "--greedy", "--ignore-eos", "--json")
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert [a["generated_text"] for a in answers] == [hf.greedy(p, 8, ignore_eos=True).text for p in ("The old man", "river")]


def test_generate_streams_the_text(cli_deployment):
    _, _, hf = cli_deployment
    done = generate("The old man", "--max-new-tokens", "8", "--greedy", "--ignore-eos", "--stream")
    assert done.returncode == 0, done.stderr
    assert done.stdout == hf.greedy("The old man", 8, ignore_eos=True).text + "\n"


def test_generate_reports_bad_input_and_unknown_deployments(cli_deployment):
    done = generate("river", "--max-length", "1")
    assert done.returncode == 2 and "must exceed the prompt length" in done.stderr
    missing = subprocess.run(CLI + ["generate", "nowhere", "river"], capture_output=True, text=True, env=os.environ)
    assert missing.returncode == 2 and "known deployments: " in missing.stderr and "cli-demo" in missing.stderr


def test_ctrl_c_shuts_the_deployment_down(cli_deployment):
    server, base, _ = cli_deployment
    from mii_core.serving.metadata import read_record

    record = read_record("cli-demo")
    pids = [record.router_pid, *record.replica_pids]
    server.send_signal(signal.SIGINT)
    try:  # a loaded machine can take long to stop every process; what they printed says where it hung
        assert server.wait(timeout=180) == 0
    except subprocess.TimeoutExpired:
        pytest.fail("mii-core serve did not stop within 180 s of Ctrl-C; its output:\n" + "".join(server.output)[-5000:])
    server.reader.join(timeout=10)
    assert "stopped" in "".join(server.output)
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=10, what="every process to exit")
    assert all(port_free(base + i) for i in range(5))
    assert read_record("cli-demo") is None
