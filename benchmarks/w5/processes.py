"""A deployment's processes seen from outside: their pids, the CPU seconds they used, py-spy recordings of them.
Shared by bench_serving.py (per W5 run) and profile_serving.py (per W1 run through a front end)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def deployment_pids(name: str) -> dict:
    """{"router": pid, "replica": pid} of the deployment's processes, found by their command lines."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "replica_main" in cmd and name in cmd:
            found["replica"] = int(entry)
        elif "router_main" in cmd and name in cmd:
            found["router"] = int(entry)
    return found


def cpu_used(pids: dict, before: dict) -> dict:
    """CPU seconds each role used since ``before`` (a role whose process is gone is left out)."""
    used = {}
    for role, pid in pids.items():
        try:
            used[role] = round(cpu_seconds(pid) - before[role], 3)
        except (OSError, KeyError):
            continue
    return used


def py_spy_exe():
    """py-spy on PATH, beside this Python (a virtual environment's scripts), or in a --target folder's bin/ on
    sys.path (gpu_setup.sh installs the wheels there)."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    candidates = [beside] + [os.path.join(p, "bin", "py-spy") for p in sys.path if p]
    return shutil.which("py-spy") or next((c for c in candidates if os.access(c, os.X_OK)), None)


def start_py_spy(pids: dict, out: str, seconds: float, prefix: str = "", gil: bool = True, rate: int = 500) -> list:
    """One ``py-spy record`` per role for ``seconds``, speedscope files ``OUT/PREFIXROLE.speedscope.json``;
    ``gil``: only samples holding the GIL (what keeps the engine's loop thread waiting), else every thread's
    active samples, one profile per thread (what each thread, the gRPC poller's included, is busy with)."""
    exe = py_spy_exe()
    if exe is None:
        print("py-spy is not installed: no profiles", flush=True)
        return []
    mode = ["--gil"] if gil else ["--threads"]
    return [subprocess.Popen([exe, "record", *mode, "--nonblocking", "--rate", str(rate), "-p", str(pid),
                              "-d", str(int(seconds)), "-f", "speedscope",
                              "-o", os.path.join(out, f"{prefix}{role}.speedscope.json")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT) for role, pid in pids.items()]


def finish_py_spy(spies: list, timeout_s: float) -> None:
    """Waits for each recording to end; one still going after timeout_s (a sampler that fell behind on a busy
    machine) is told to stop as Ctrl-C would (it then writes what it has), then killed. Never raises: a
    profile must not cost the run it watched."""
    for spy in spies:
        try:
            spy.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(timeout=15)
            except subprocess.TimeoutExpired:
                spy.kill()
