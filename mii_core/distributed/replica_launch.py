"""The launch command of each tensor-parallel replica of a deployment, as MII builds it: replicas placed
on the hosts of a DeepSpeed hostfile (or this machine), replica i's ranks on port ``torch_dist_port +
100·i``, its devices from ``device_map``. The serving layer runs each command (with its server arguments)
and owns the processes; nothing here starts one.

Hostfile (DeepSpeed's, as MII reads it): one ``hostname slots=N`` per line, ``#`` comments. ``device_map``
(MII): ``"auto"`` (fill each host's slots in order, ``tensor_parallel`` devices per replica), an int or a
list of ints (one replica on this machine), a list of lists (one replica each, on this machine), or
``{host: [[devices], ...]}``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

LOCAL_HOST = "localhost"
PORT_STRIDE = 100  # replica i's ranks rendezvous on torch_dist_port + 100·i
_HOST_LINE = re.compile(r"^(\S+)\s+slots=(\d+)$")


@dataclass(frozen=True)
class ReplicaLaunch:
    index: int
    host: str
    devices: list[int]
    master_port: int
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to the launcher's environment


def read_hostfile(path: Union[str, Path]) -> Optional[dict[str, int]]:
    """{host: slots} in file order; None when the file does not exist (MII then uses this machine)."""
    path = Path(path)
    if not path.is_file():
        return None
    hosts: dict[str, int] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _HOST_LINE.match(line)
        if match is None:
            raise ValueError(f"hostfile '{path}' line {number}: {raw!r} is not 'hostname slots=N'")
        if match.group(1) in hosts:
            raise ValueError(f"hostfile '{path}' line {number}: host {match.group(1)!r} is listed twice")
        hosts[match.group(1)] = int(match.group(2))
    if not hosts:
        raise ValueError(f"hostfile '{path}' lists no hosts; write one 'hostname slots=N' per line")
    return hosts


def place_replicas(tensor_parallel: int, replica_num: int, device_map: Any,
                   hosts: dict[str, int]) -> list[tuple[str, list[int]]]:
    """(host, devices) of each replica, as MII allocates them."""
    if device_map == "auto":
        placed = []
        for host, slots in hosts.items():
            for first in range(0, slots - tensor_parallel + 1, tensor_parallel):
                if len(placed) < replica_num:
                    placed.append((host, list(range(first, first + tensor_parallel))))
        if len(placed) < replica_num:
            raise ValueError(f"replica_num={replica_num} replicas of tensor_parallel={tensor_parallel} devices need "
                             f"{replica_num * tensor_parallel} devices in groups of {tensor_parallel}; the hosts "
                             f"have {hosts}: lower replica_num or tensor_parallel, or add hosts to the hostfile")
        return placed
    if isinstance(device_map, dict):
        placed = [(host, list(devices)) for host, groups in device_map.items() for devices in groups]
    elif isinstance(device_map, int):
        placed = [(LOCAL_HOST, [device_map])]
    elif device_map and all(isinstance(d, int) for d in device_map):
        placed = [(LOCAL_HOST, list(device_map))]
    else:
        placed = [(LOCAL_HOST, list(devices)) for devices in device_map]
    _check_placement(placed, tensor_parallel, replica_num, hosts)
    return placed


def _check_placement(placed, tensor_parallel: int, replica_num: int, hosts: dict[str, int]) -> None:
    if len(placed) != replica_num:
        raise ValueError(f"device_map names {len(placed)} replica(s) but replica_num={replica_num}; give one device "
                         "list per replica")
    for host, devices in placed:
        if len(devices) != tensor_parallel:
            raise ValueError(f"device_map gives a replica on {host} the devices {devices}, but tensor_parallel="
                             f"{tensor_parallel} needs {tensor_parallel} devices per replica")
        slots = hosts.get(host)
        if slots is not None and any(not 0 <= d < slots for d in devices):
            raise ValueError(f"device_map gives a replica on {host} the devices {devices}, but {host} has {slots} "
                             f"device(s) (0..{slots - 1})")


ServerCommand = Union[Sequence[str], Callable[[int], Sequence[str]]]


def replica_launch_commands(tensor_parallel: int, replica_num: int, torch_dist_port: int, device_map: Any,
                            server_command: ServerCommand, hostfile: Union[str, Path] = "/job/hostfile",
                            local_devices: Optional[int] = None,
                            launcher: str = "deepspeed") -> list[ReplicaLaunch]:
    """Each replica's launch. ``server_command`` is what every rank of a replica runs (a program and its
    arguments; the rank reads RANK / WORLD_SIZE / LOCAL_RANK from the launcher), or a function of the
    replica's index returning it (each replica serving on its own port). ``local_devices``: this machine's device
    count when there is no hostfile (default: torch.cuda.device_count()). ``launcher``: "deepspeed" (MII's,
    any host of the hostfile) or "torchrun" (this machine only)."""
    if launcher not in ("deepspeed", "torchrun"):
        raise ValueError(f"launcher={launcher!r}: choose 'deepspeed' or 'torchrun'")
    hosts = read_hostfile(hostfile)
    multi_node = hosts is not None
    if hosts is None:
        hosts = {LOCAL_HOST: _local_device_count() if local_devices is None else local_devices}
    launches = []
    for index, (host, devices) in enumerate(place_replicas(tensor_parallel, replica_num, device_map, hosts)):
        port = torch_dist_port + PORT_STRIDE * index
        program = list(server_command(index) if callable(server_command) else server_command)
        command, env = launch_command(launcher, host, devices, tensor_parallel, port, program,
                                      str(hostfile) if multi_node else None)
        launches.append(ReplicaLaunch(index, host, list(devices), port, command, env))
    return launches


def launch_command(launcher: str, host: str, devices: Sequence[int], tensor_parallel: int, master_port: int,
                   program: Sequence[str], hostfile: Optional[str] = None,
                   executable: Optional[Sequence[str]] = None) -> tuple[list[str], dict[str, str]]:
    """One replica's launcher line and the environment it adds. ``devices`` empty: CPU ranks (gloo),
    ``tensor_parallel`` processes on this machine. ``executable``: how to run the launcher (default:
    its name, found on PATH)."""
    program = list(program)
    if launcher == "deepspeed":
        where = ["-i", f"{host}:{','.join(map(str, devices))}"] if devices else ["--num_gpus", str(tensor_parallel)]
        command = [*(executable or ["deepspeed"]), "-H", hostfile or os.devnull, *where, "--master_port",
                   str(master_port), "--master_addr", host, "--no_ssh_check", "--no_local_rank", "--no_python",
                   *program]
        return command, {}
    if host != LOCAL_HOST:
        raise ValueError(f"launcher='torchrun' starts ranks on this machine only, but a replica is placed "
                         f"on {host!r}; use launcher='deepspeed' for a multi-node hostfile")
    command = [*(executable or ["torchrun"]), "--nproc_per_node", str(tensor_parallel), "--master_port",
               str(master_port), "--no-python", *program]
    return command, ({"CUDA_VISIBLE_DEVICES": ",".join(map(str, devices))} if devices else {})


def _local_device_count() -> int:
    import torch

    return torch.cuda.device_count()
