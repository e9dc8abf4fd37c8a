"""Where each replica runs: MII's ``device_map`` forms and checks, against the hostfile or this machine.

``device_map`` is ``"auto"``, an int (one GPU), a list of ints (one replica's GPUs), a list of lists
(one list per replica) or ``{host: list of lists}``. Everything MII refuses is a ValueError here,
before anything is spawned. Without a hostfile the only host is ``localhost`` with this machine's
GPUs; with none, replicas run on the CPU (``device_map`` must then stay "auto").
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Optional

LOCAL_HOSTS = {"localhost", "127.0.0.1"}


@dataclass(frozen=True)
class ReplicaPlacement:
    host: str
    devices: tuple[int, ...]  # accelerator indices; () means the CPU

    @property
    def is_local(self) -> bool:
        return is_this_machine(self.host)


def is_this_machine(host: str) -> bool:
    """Whether ``host`` (a hostfile's name or address) is this machine: a loopback name, this machine's
    hostname, or a name whose address is one of this machine's own (binding to it succeeds only then)."""
    if host in LOCAL_HOSTS or host == socket.gethostname():
        return True
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False  # a name this machine cannot resolve is not this machine
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as sock:
            try:
                sock.bind((address[0], 0))
                return True
            except OSError:
                continue
    return False


def read_hostfile(path: str) -> Optional[dict[str, int]]:
    """DeepSpeed's hostfile: ``hostname slots=N`` per line; None when the file does not exist."""
    if not os.path.isfile(path):
        return None
    pool: dict[str, int] = {}
    for number, line in enumerate(open(path, encoding="utf-8"), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].startswith("slots=") or not parts[1][6:].isdigit():
            raise ValueError(f"hostfile {path} line {number}: expected 'hostname slots=N', got {line!r}")
        if parts[0] in pool:
            raise ValueError(f"hostfile {path} names host {parts[0]!r} twice")
        pool[parts[0]] = int(parts[1][6:])
    if not pool:
        raise ValueError(f"hostfile {path} names no host")
    return pool


def local_gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def normalize_device_map(device_map: Any) -> Any:
    """MII's short forms → ``{host: [[gpu, ...], ...]}`` (or "auto")."""
    if device_map == "auto" or isinstance(device_map, dict):
        return device_map
    if isinstance(device_map, int):
        return {"localhost": [[device_map]]}
    if isinstance(device_map, list) and device_map and all(isinstance(d, int) for d in device_map):
        return {"localhost": [device_map]}
    if isinstance(device_map, list) and all(isinstance(d, list) for d in device_map):
        return {"localhost": device_map}
    raise ValueError(f"device_map {device_map!r}: use 'auto', an int, a list of ints, a list of lists, "
                     "or {host: list of lists}")


def place_replicas(device_map: Any, replica_num: int, tensor_parallel: int, hostfile: str) -> list[ReplicaPlacement]:
    pool = read_hostfile(hostfile) or {"localhost": local_gpu_count()}
    device_map = normalize_device_map(device_map)
    if device_map == "auto":
        return _auto_placements(pool, replica_num, tensor_parallel)
    groups = sum(len(groups) for groups in device_map.values())
    if groups != replica_num:
        raise ValueError(f"device_map has {groups} device group(s) but replica_num={replica_num}; "
                         "give one group per replica")
    placements = []
    for host, host_groups in device_map.items():
        if host not in pool:
            raise ValueError(f"device_map names host {host!r}, which is not in the hostfile ({hostfile}); "
                             f"hosts: {', '.join(sorted(pool))}")
        _check_host_groups(host, host_groups, pool[host], tensor_parallel)
        placements.extend(ReplicaPlacement(host, tuple(group)) for group in host_groups)
    return placements


def _check_host_groups(host: str, groups: list[list[int]], slots: int, tensor_parallel: int) -> None:
    used: set[int] = set()
    for group in groups:
        if len(group) != tensor_parallel:
            raise ValueError(f"device_map group {group} on {host} has {len(group)} GPU(s) but tensor_parallel="
                             f"{tensor_parallel}; each group must hold tensor_parallel GPUs")
        for gpu in group:
            if not 0 <= gpu < slots:
                raise ValueError(f"device_map asks for GPU {gpu} on {host}, which has {slots} GPU(s) "
                                 f"(valid: 0..{slots - 1})" if slots else
                                 f"device_map asks for GPU {gpu} on {host}, which has no GPU; use device_map='auto'")
            if gpu in used:
                raise ValueError(f"device_map gives GPU {gpu} on {host} to two replicas")
            used.add(gpu)


def _auto_placements(pool: dict[str, int], replica_num: int, tensor_parallel: int) -> list[ReplicaPlacement]:
    if all(slots == 0 for slots in pool.values()):  # no accelerator anywhere: every replica on the CPU
        local = next(iter(pool))
        return [ReplicaPlacement(local, ()) for _ in range(replica_num)]
    placements = []
    for host, slots in pool.items():
        for i in range(min(slots // tensor_parallel, replica_num - len(placements))):
            placements.append(ReplicaPlacement(host, tuple(range(i * tensor_parallel, (i + 1) * tensor_parallel))))
    if len(placements) < replica_num:
        total = sum(pool.values())
        raise ValueError(f"only {len(placements)} replica(s) of tensor_parallel={tensor_parallel} fit on the "
                         f"{total} GPU(s) available, but replica_num={replica_num}")
    return placements
