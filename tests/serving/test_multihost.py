"""Replicas across hosts (issue 21 §4), on one machine with two "hosts" made of network namespaces: a
deployment with one replica per host (the remote one started by DeepSpeed's launcher through pdsh over
ssh) answers as HF transformers does, survives the SIGKILL of the remote replica (its requests end with an
error naming it and its host, the local replica keeps serving), and terminate leaves no process on
either host. Traffic stays inside the two namespaces the fixture makes.

Needs root, iproute2, openssh-server and pdsh (``scripts/ci_multihost_setup.sh`` installs them; CI runs it):
skipped with the reason where they are missing, except under CI=true, where that is a failure.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.multihost_scenario import GREEDY, LONG, PROMPTS
from support.netns_hosts import TwoHosts, missing_requirements
from support.serving import SMALL_KV, processes_mentioning, wait_until

SCENARIO = Path(__file__).parents[1] / "support" / "multihost_scenario.py"
SCENARIO_SECONDS = 480
PORT = 40050  # inside fresh namespaces every port is free


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    missing = missing_requirements()
    if missing:
        reason = f"the multi-host test needs {', '.join(missing)}: run scripts/ci_multihost_setup.sh as root"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the multi-host test, but {reason}")
        pytest.skip(reason)
    hosts = TwoHosts(tmp_path_factory.mktemp("hosts"))
    try:
        yield hosts.start()
    finally:
        hosts.close()


def run_scenario(hosts: TwoHosts, model: Path, folder: Path, name: str, kill_remote: bool) -> dict:
    hostfile = folder / "hostfile"
    hostfile.write_text(f"{hosts.local_address} slots=1\n{hosts.remote_address} slots=1\n")
    settings, out = folder / "settings.json", folder / "seen.json"
    settings.write_text(json.dumps({"model": str(model), "name": name, "hostfile": str(hostfile),
                                    "local": hosts.local_address, "remote": hosts.remote_address, "port": PORT,
                                    "engine": SMALL_KV, "kill_remote": kill_remote}))
    # pdsh's ssh takes the throwaway key and known host from this config (the machine's ~/.ssh is untouched)
    env = dict(os.environ, PDSH_SSH_ARGS_APPEND=f"-F {hosts.ssh_config}")
    done = subprocess.run(hosts.in_local(sys.executable, str(SCENARIO), str(settings), str(out)), env=env,
                          capture_output=True, text=True, timeout=SCENARIO_SECONDS)
    assert out.exists(), f"the scenario wrote nothing (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(out.read_text())


def logs(seen: dict) -> str:
    folder = Path(seen.get("folder") or "/nonexistent")
    return "\n".join(f"--- {p.name}:\n{p.read_text(errors='replace')[-2500:]}" for p in sorted(folder.glob("*.log")))


def test_one_replica_per_host_serves_survives_the_remote_ones_loss_and_terminates_on_both(
        two_hosts, checkpoint, oracle, tmp_path, mii_cache):
    model = checkpoint("gqa")
    seen = run_scenario(two_hosts, model, tmp_path, "multihost", kill_remote=True)
    assert "failure" not in seen, f"{seen.get('failure')}\n{logs(seen)}"
    remote = two_hosts.remote_address

    # the local replica as before (loopback); the remote one on its host's address, reached over TCP
    assert seen["hosts"] == [None, remote]
    assert seen["replica_links"] == [["127.0.0.1", PORT + 1], [remote, PORT + 2]]
    assert seen["victim_listens_on"] == [remote], "the remote link listens on the host's address only"

    hf = oracle(model)
    assert [o.get("text") for o in seen["greedy"]] == [hf.greedy(p, GREEDY["max_new_tokens"]).text for p in PROMPTS]
    assert all(count >= 1 for count in seen["served"]), f"both replicas serve: {seen['served']}"

    # the remote replica killed while every long request streamed: those it ran end naming it and its host
    long = dict(zip(PROMPTS, seen["long"]))
    failed = {p: o["error"] for p, o in long.items() if "error" in o}
    answered = {p: o["text"] for p, o in long.items() if "text" in o}
    assert failed and answered, f"requests ran on both replicas: {seen['long']}"
    lost = f"replica 1 on {remote} was lost while running this request"
    assert all(lost in message for message in failed.values()), failed
    assert answered == {p: hf.greedy(p, LONG["max_new_tokens"], ignore_eos=True).text for p in answered}

    # the local replica keeps serving, right
    health = seen["health_after_kill"]
    assert (health["status"], health["replicas_alive"], health["replicas"][0]["alive"]) == ("degraded", 1, True)
    assert "exited with code" in health["replicas"][1]["lost_reason"]
    assert [o.get("text") for o in seen["after_kill"]] == [hf.greedy(p, GREEDY["max_new_tokens"]).text
                                                           for p in PROMPTS[:2]]

    # terminate: nothing of the deployment left on either host
    assert seen["terminated"]
    wait_until(lambda: not processes_mentioning(seen["folder"]), timeout=15, what="the deployment's processes to end")
    assert two_hosts.remote_processes() == [], "a process outlived the deployment on the remote host"
    print(f"\ntwo hosts: {len(PROMPTS)} greedy answers matched HF; {len(failed)} long request(s) lost with the "
          f"remote replica, {len(answered)} answered by the local one; nothing left on either host")


def test_terminate_stops_a_live_remote_replica_and_everything_on_both_hosts(two_hosts, checkpoint, oracle, tmp_path,
                                                                            mii_cache):
    model = checkpoint("gqa")
    seen = run_scenario(two_hosts, model, tmp_path, "multihost-terminate", kill_remote=False)
    assert "failure" not in seen, f"{seen.get('failure')}\n{logs(seen)}"
    hf = oracle(model)
    assert [o.get("text") for o in seen["greedy"]] == [hf.greedy(p, GREEDY["max_new_tokens"]).text for p in PROMPTS]
    assert all(count >= 1 for count in seen["served"]), f"both replicas serve: {seen['served']}"
    assert seen["remote_replica_before_terminate"], "the remote replica ran until terminate"
    assert seen["terminated"]
    wait_until(lambda: not processes_mentioning(seen["folder"]), timeout=15, what="the deployment's processes to end")
    assert two_hosts.remote_processes() == [], "a process outlived the deployment on the remote host"
