"""The launcher line of one tensor-parallel replica, as MII builds it: DeepSpeed's launcher (or torchrun)
starting ``tensor_parallel`` ranks of a program, replica i's ranks meeting on ``torch_dist_port + 100·i``.

Where each replica runs (``device_map``, the hostfile) is decided by ``mii_core.config.placement``, its
ports by ``mii_core.config.replicas``; the serving layer (``serving/launch.py``) builds each replica's
command with :func:`launch_command` and owns the processes; nothing here starts one.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

LOCAL_HOST = "localhost"


def launch_command(launcher: str, host: str, devices: Sequence[int], tensor_parallel: int, master_port: int,
                   program: Sequence[str], executable: Optional[Sequence[str]] = None) -> tuple[list[str], dict[str, str]]:
    """One replica's launcher line and the environment it adds. ``devices`` empty: CPU ranks (gloo),
    ``tensor_parallel`` processes on this machine. ``executable``: how to run the launcher (default:
    its name, found on PATH)."""
    program = list(program)
    if launcher == "deepspeed":
        where = ["-i", f"{host}:{','.join(map(str, devices))}"] if devices else ["--num_gpus", str(tensor_parallel)]
        # -H os.devnull: no hostfile, so deepspeed starts the ranks here (deployments are single-host)
        command = [*(executable or ["deepspeed"]), "-H", os.devnull, *where, "--master_port",
                   str(master_port), "--master_addr", host, "--no_ssh_check", "--no_local_rank", "--no_python",
                   *program]
        return command, {}
    if host != LOCAL_HOST:
        raise ValueError(f"launcher='torchrun' starts ranks on this machine only, but a replica is placed "
                         f"on {host!r}; use launcher='deepspeed'")
    command = [*(executable or ["torchrun"]), "--nproc_per_node", str(tensor_parallel), "--master_port",
               str(master_port), "--no-python", *program]
    return command, ({"CUDA_VISIBLE_DEVICES": ",".join(map(str, devices))} if devices else {})
