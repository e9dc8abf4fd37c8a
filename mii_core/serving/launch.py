"""Starting a deployment's processes: the router (by serve()) and its replicas (by the router).

Each replica is one process group started by the command that :func:`replica_command` builds: today
one process per replica. Tensor parallelism slots in there: the same function returns a launcher
line (``torchrun --nproc-per-node TP --master-port torch_dist_port + 100*i ...`` or DeepSpeed's
``deepspeed -i host:gpus --master_port ...``) whose rank 0 serves the link, and nothing else changes.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

LOG_TAIL_LINES = 40


def replica_command(folder: Path, index: int) -> list[str]:
    return [sys.executable, "-m", "mii_core.serving.replica", str(folder), str(index)]


def router_command(folder: Path) -> list[str]:
    return [sys.executable, "-m", "mii_core.serving.router_main", str(folder)]


def replica_env(placement: dict[str, Any], replica_num: int) -> dict[str, str]:
    env = dict(os.environ)
    devices = placement["devices"]
    if devices:
        # The replica sees only its GPUs (as cuda:0, ...); device_map indices count the GPUs this
        # process sees, so an inherited CUDA_VISIBLE_DEVICES is mapped through.
        visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(visible[d] if visible else str(d) for d in devices)
    elif "OMP_NUM_THREADS" not in env:
        # CPU replicas share the cores; more threads each than cores each only thrash.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // replica_num))
    return env


def log_path(folder: Path, process: str) -> Path:
    return Path(folder) / f"{process}.log"


def spawn(command: list[str], log_file: Path, env: dict[str, str] | None = None,
          new_session: bool = False) -> subprocess.Popen:
    with open(log_file, "ab") as log:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=new_session, close_fds=True)


def spawn_replica(folder: Path, index: int, placement: dict[str, Any], replica_num: int) -> subprocess.Popen:
    return spawn(replica_command(folder, index), log_path(folder, f"replica-{index}"),
                 replica_env(placement, replica_num))


def spawn_router(folder: Path) -> subprocess.Popen:
    # Its own session: a persistent deployment outlives the caller's terminal and Ctrl-C, and the
    # whole deployment (router + replicas) is one process group that can be ended at once.
    return spawn(router_command(folder), log_path(folder, "router"), new_session=True)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
