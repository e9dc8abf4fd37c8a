"""Starting a deployment's processes: the router (by serve()) and its replicas (by the router).

Each replica is started by the command that :func:`replica_command` builds: one process, or under
tensor parallelism a launcher that starts ``tensor_parallel`` ranks of the same program (rank 0 serves
the link, the others follow it: :mod:`mii_core.serving.lockstep`). The launcher is DeepSpeed's
(``deepspeed -i localhost:gpus --master_port torch_dist_port + 100·i``, or ``--num_gpus N`` for CPU
ranks), as MII launches replicas, or ``torchrun`` where deepspeed is not installed;
``MII_CORE_TP_LAUNCHER=deepspeed|torchrun`` chooses. A tensor-parallel replica is a process group of its
own, so that the router can end every rank at once. A replica placed on another host is started there
by DeepSpeed's launcher through its pdsh runner (:mod:`mii_core.serving.remote_launch`), whatever its
``tensor_parallel``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from mii_core.config.replicas import replica_dist_port
from mii_core.distributed.replica_launch import LOCAL_HOST, launch_command
from mii_core.serving.remote_launch import deepspeed_executable, remote_replica_command

LOG_TAIL_LINES = 40
LAUNCHER_ENV = "MII_CORE_TP_LAUNCHER"
ROUTER_PID_ENV = "MII_CORE_ROUTER_PID"  # a replica's ranks exit when this process is gone


def replica_command(folder: Path, index: int, tensor_parallel: int = 1, torch_dist_port: int = 29500,
                    devices: tuple[int, ...] = ()) -> tuple[list[str], dict[str, str]]:
    """The command of replica ``index`` on this machine and what it adds to the environment."""
    program = replica_program(folder, index)
    if tensor_parallel == 1:
        return program, {}
    launcher, executable = tp_launcher()
    return launch_command(launcher, LOCAL_HOST, devices, tensor_parallel, replica_dist_port(torch_dist_port, index),
                          program, executable=executable)


def replica_program(folder: Path, index: int) -> list[str]:
    return [sys.executable, "-m", "mii_core.replica_main", str(folder), str(index)]


def tp_launcher() -> tuple[str, list[str]]:
    """("deepspeed" | "torchrun", how to run it): deepspeed when installed (MII's), else torchrun."""
    chosen = os.environ.get(LAUNCHER_ENV, "").strip()
    if chosen not in ("", "deepspeed", "torchrun"):
        raise ValueError(f"{LAUNCHER_ENV}={chosen!r}: choose 'deepspeed' or 'torchrun', or leave it unset")
    deepspeed = deepspeed_executable()
    if chosen == "deepspeed" and deepspeed is None:
        raise ValueError(f"{LAUNCHER_ENV}=deepspeed but the deepspeed launcher is not installed "
                         "(pip install deepspeed), or unset it to use torchrun")
    if deepspeed is not None and chosen != "torchrun":
        return "deepspeed", [deepspeed]
    return "torchrun", [sys.executable, "-m", "torch.distributed.run"]


def router_command(folder: Path) -> list[str]:
    return [sys.executable, "-m", "mii_core.serving.router_main", str(folder)]


def replica_env(placement: dict[str, Any], replica_num: int, tensor_parallel: int = 1) -> dict[str, str]:
    env = dict(os.environ, **{ROUTER_PID_ENV: str(os.getpid())})
    devices = placement["devices"]
    if devices and tensor_parallel == 1:  # (a tensor-parallel launcher gives each rank its GPU itself)
        # The replica sees only its GPUs (as cuda:0, ...); device_map indices count the GPUs this
        # process sees, so an inherited CUDA_VISIBLE_DEVICES is mapped through.
        visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(visible[d] if visible else str(d) for d in devices)
    elif not devices and "OMP_NUM_THREADS" not in env:
        # CPU replicas share the cores; more threads each than cores each only thrash.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // (replica_num * tensor_parallel)))
    return env


def log_path(folder: Path, process: str) -> Path:
    return Path(folder) / f"{process}.log"


def spawn(command: list[str], log_file: Path, env: dict[str, str] | None = None,
          new_session: bool = False) -> subprocess.Popen:
    with open(log_file, "ab") as log:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=new_session, close_fds=True)


def spawn_replica(folder: Path, index: int, placement: dict[str, Any], replica_num: int,
                  tensor_parallel: int = 1, torch_dist_port: int = 29500, remote_host: Optional[str] = None,
                  hostfile: str = "") -> subprocess.Popen:
    """Replica ``index``'s process: the replica itself, or the launcher of its ranks; on ``remote_host``
    DeepSpeed's launcher reaching that host through pdsh (a process group of its own, ended as one)."""
    env = replica_env(placement, replica_num, tensor_parallel)
    if remote_host:
        command, launcher_env = remote_replica_command(folder, index, replica_program(folder, index), remote_host,
                                                       tuple(placement["devices"]), torch_dist_port, hostfile, env)
    else:
        command, launcher_env = replica_command(folder, index, tensor_parallel, torch_dist_port,
                                                tuple(placement["devices"]))
    return spawn(command, log_path(folder, f"replica-{index}"), {**env, **launcher_env},
                 new_session=tensor_parallel > 1 or bool(remote_host))


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
