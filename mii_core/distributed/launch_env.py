"""What a launcher (``deepspeed --num_gpus N``, ``torchrun --nproc_per_node N``) tells each rank: RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT. Without a launcher: one rank."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional


@dataclass(frozen=True)
class LaunchEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: Optional[int] = None  # None: the model option torch_dist_port


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer >= {minimum}; it is set by the "
                         "launcher (deepspeed / torchrun): fix or unset it")
    return value


def read_launch_env(env: Optional[Mapping[str, str]] = None) -> LaunchEnv:
    env = os.environ if env is None else env
    world_size = _int(env, "WORLD_SIZE", 1, 1)
    rank = _int(env, "RANK", 0, 0)
    if rank >= world_size:
        raise ValueError(f"environment variable RANK={rank} is not below WORLD_SIZE={world_size}; fix the launcher's "
                         "environment")
    port = _int(env, "MASTER_PORT", 0, 1) or None
    return LaunchEnv(rank, world_size, _int(env, "LOCAL_RANK", rank, 0), env.get("MASTER_ADDR", "127.0.0.1"), port)
