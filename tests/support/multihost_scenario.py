"""The multi-host deployment's life, run on the "local" host (inside its network namespace, where the
router and the client must be to reach the remote host): ``python multihost_scenario.py SETTINGS OUT``.

SETTINGS is a JSON file (model, deployment name, hostfile, both addresses, port, and the mode: "kill" the
remote replica, "partition" its host off the network, or "terminate" with both alive); OUT receives what
was seen, as JSON, for the test to check against HF and by hand: the replicas' hosts and links, greedy
answers and how many each replica served, the remote replica's pid and where its link listens, then the
long requests' outcomes around the fault and requests after it.
Every wait is bounded; the deployment is ended whatever happens.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

PROMPTS = ["DeepSpeed is", "The quick brown fox", "Seattle is a city", "Once upon a time"]
GREEDY = {"do_sample": False, "max_new_tokens": 8}
# as long as the tiny model's 512 positions allow (a few seconds), so the fault strikes mid-request
LONG = {"do_sample": False, "max_new_tokens": 480, "ignore_eos": True}
WAIT_SECONDS = 120


def wait_for(condition, what: str, timeout: float = WAIT_SECONDS, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return value


def replica_pid(folder: str, index: int) -> int | None:
    """The replica process itself (not a launcher whose command line names it too)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
        except OSError:
            continue
        if argv[1:] == ["-m", "mii_core.replica_main", folder, str(index)]:
            return int(pid)
    return None


def listening_addresses(pid: int, port: int) -> list[str]:
    """The IPv4 addresses ``pid``'s network namespace listens on at ``port`` (from /proc/PID/net/tcp)."""
    found = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.append(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def generate_all(client, prompts, options, on_first_chunk=None) -> list[dict]:
    """Each prompt as its own request, all at once; each outcome: the text, or the error's message."""
    outcomes: list[dict] = [{} for _ in prompts]

    def one(i: int) -> None:
        def streamed(responses):
            if on_first_chunk is not None:
                on_first_chunk(i)
        try:
            response = client.generate(prompts[i], streaming_fn=streamed if on_first_chunk else None, **options)[0]
            outcomes[i] = {"text": response.generated_text, "length": response.generated_length}
        except Exception as exc:
            outcomes[i] = {"error": f"{type(exc).__name__}: {exc}"}

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_SECONDS * 3)
    return outcomes


def served(client) -> list[int]:
    return [r["served"] for r in client.health()["replicas"]]


def kill_remote_replica(client, folder: str, settings: dict, seen: dict) -> None:
    os.kill(seen["remote_replica_pid"], signal.SIGKILL)


def cut_remote_host_off(client, folder: str, settings: dict, seen: dict) -> None:
    """The remote host vanishes: its end of the veth goes down, so packets vanish with no reset."""
    subprocess.run(["ip", "-n", settings["remote_ns"], "link", "set", settings["remote_device"], "down"],
                   check=True, timeout=20)


FAULTS = {"kill": kill_remote_replica, "partition": cut_remote_host_off}


def around_a_fault(client, folder: str, settings: dict, seen: dict) -> None:
    """Long requests on both replicas; the fault struck once every one of them has streamed a token."""
    started: set[int] = set()

    def strike_when_all_started() -> None:
        wait_for(lambda: len(started) == len(PROMPTS), "every long request to stream a token", interval=0.005)
        FAULTS[settings["mode"]](client, folder, settings, seen)
        seen["fault_at"] = time.monotonic()
        seen["outstanding_at_fault"] = [r["outstanding"] for r in client.health()["replicas"]]

    striker = threading.Thread(target=strike_when_all_started)
    striker.start()
    seen["long"] = generate_all(client, PROMPTS, LONG, on_first_chunk=started.add)
    seen["long_ended_after_fault_s"] = time.monotonic() - seen.get("fault_at", time.monotonic())
    striker.join(timeout=WAIT_SECONDS)
    wait_for(lambda: not client.health()["replicas"][1]["alive"], "the router to mark the remote replica lost")
    seen["health_after_fault"] = client.health()
    seen["after_fault"] = generate_all(client, PROMPTS[:2], GREEDY)


def main(settings_path: str, out_path: str) -> int:
    import mii_core

    settings = json.loads(Path(settings_path).read_text())
    seen: dict = {}
    client = None
    try:
        client = mii_core.serve(settings["model"], deployment_name=settings["name"], hostfile=settings["hostfile"],
                                replica_num=2, device_map={settings["local"]: [[0]], settings["remote"]: [[0]]},
                                device="cpu", port_number=settings["port"], transports=[],
                                inference_engine_config=settings["engine"])
        client = mii_core.client(settings["name"])  # the real client, found by name as a user would
        folder = client.record.folder
        seen["folder"], seen["replica_links"] = folder, client.record.replica_links
        seen["hosts"] = [r["host"] for r in client.health()["replicas"]]
        seen["greedy"] = generate_all(client, PROMPTS, GREEDY)
        seen["served"] = served(client)
        seen["remote_replica_pid"] = replica_pid(folder, 1)
        seen["remote_listens_on"] = listening_addresses(seen["remote_replica_pid"], client.record.replica_links[1][1])
        if settings["mode"] in FAULTS:
            around_a_fault(client, folder, settings, seen)
    except Exception as exc:
        seen["failure"] = f"{type(exc).__name__}: {exc}"
    finally:
        if client is not None:
            client.terminate_server(timeout=60)
            seen["terminated"] = True
        Path(out_path).write_text(json.dumps(seen, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
