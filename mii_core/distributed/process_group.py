"""The process group, initialised once per process (NCCL on GPUs, gloo on CPU), with a timeout so a rank
that dies or stalls ends the others with an error naming it rather than a hang."""
from __future__ import annotations

import atexit
import os
from datetime import timedelta
from typing import Callable, Optional

import torch
import torch.distributed as dist

from mii_core.distributed.launch_env import LaunchEnv, read_launch_env
from mii_core.distributed.parallel_context import ParallelContext

TIMEOUT_ENV = "MII_CORE_DIST_TIMEOUT"  # seconds a collective may wait for a peer (named in RankFailure)
DEFAULT_TIMEOUT_S = 300
LAUNCH_HINT = "deepspeed --num_gpus {n} script.py, or torchrun --nproc_per_node {n} script.py"


def collective_timeout() -> timedelta:
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise ValueError(f"environment variable {TIMEOUT_ENV}={raw!r} must be a positive number of seconds")
    return timedelta(seconds=seconds)


def init_parallel_context(tensor_parallel: int, device_type: str, port: int,
                          launch: LaunchEnv | None = None) -> ParallelContext:
    """This rank's ParallelContext; joins (or reuses) the default process group when tensor_parallel > 1."""
    launch = launch or read_launch_env()
    if launch.world_size != tensor_parallel:
        raise ValueError(f"tensor_parallel={tensor_parallel} but this process was launched as one of "
                         f"{launch.world_size} rank(s) (WORLD_SIZE); launch {tensor_parallel} ranks with "
                         f"{LAUNCH_HINT.format(n=tensor_parallel)}, or set tensor_parallel={launch.world_size}")
    ctx = ParallelContext(launch.rank, launch.world_size, launch.local_rank)
    if tensor_parallel == 1:
        return ctx
    if dist.is_initialized():
        if dist.get_world_size() != tensor_parallel:
            raise ValueError(f"torch.distributed is already initialised with {dist.get_world_size()} ranks, "
                             f"not tensor_parallel={tensor_parallel}")
        return ParallelContext(dist.get_rank(), dist.get_world_size(), launch.local_rank)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(launch.local_rank % torch.cuda.device_count())
    os.environ.setdefault("MASTER_ADDR", launch.master_addr)
    os.environ.setdefault("MASTER_PORT", str(launch.master_port or port))
    dist.init_process_group(backend, init_method="env://", rank=launch.rank, world_size=launch.world_size,
                            timeout=collective_timeout())
    # torn down before the interpreter's own teardown (see before_process_group_teardown)
    atexit.register(_destroy_process_group)
    return ctx


_TEARDOWN: list[Callable[[], Optional[Callable[[], None]]]] = []


def before_process_group_teardown(callback_ref: Callable[[], Optional[Callable[[], None]]]) -> None:
    """At exit, the callback (given as a weak reference: a pipeline that was collected is skipped) runs
    before the process group goes: an engine still alive at interpreter teardown may abort the process
    ("terminate called without an active exception")."""
    _TEARDOWN.append(callback_ref)


def _destroy_process_group() -> None:
    for callback_ref in _TEARDOWN:
        callback = callback_ref()
        if callback is not None:
            callback()
    if dist.is_initialized():
        dist.destroy_process_group()
