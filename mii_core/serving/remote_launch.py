"""Starting a replica on another host, as MII does: DeepSpeed's launcher with the hostfile and its pdsh
runner, which reaches the host over ssh and starts ``deepspeed.launcher.launch`` there, which starts the
replica's rank(s).

What the other host needs (README, "Replicas on other hosts"): passwordless ssh from this machine
(pdsh's ssh module; extra ssh options through ``PDSH_SSH_ARGS_APPEND``), the same Python environment at
the same path, the model at the same path, and the deployment's cache folder (``MII_CACHE_PATH``) at the
same path, on a filesystem both see: the replica reads the deployment record (its config and the link's
secret) from there, so the secret never travels on a command line.

DeepSpeed's pdsh runner passes to the remote side only the variables it exports (``PYTHON*`` and a few
more) plus those of a ``DS_ENV_FILE``; the variables mii-core and its libraries read are written into
such a file per replica. Their values are visible on the pdsh command line, so anything that looks like
a secret is never forwarded.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Mapping, Sequence

from mii_core.config.replicas import replica_dist_port

DS_ENV_FILE = "DS_ENV_FILE"  # DeepSpeed's launcher reads extra exports from this file
PDSH_SSH_ARGS_APPEND = "PDSH_SSH_ARGS_APPEND"  # options pdsh adds to its ssh command line
SSH_KEEPALIVE = "-o ServerAliveInterval=5 -o ServerAliveCountMax=3"  # a silent host: ssh ends in ~15 s
# The variables a replica reads (mii-core's, the tokenizer's and hub's, kernels', threads)
FORWARDED_PREFIXES = ("MII_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "TRITON_", "TORCH", "OMP_NUM_THREADS")
SECRET_MARKS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
NOT_FORWARDED = {"MII_CORE_ROUTER_PID"}  # a pid on this machine means nothing on another


def check_remote_launch(hostfile: str, hosts: Sequence[str]) -> None:
    """Refuses (ValueError, saying what to install) when replicas on ``hosts`` cannot be started."""
    named = ", ".join(sorted(set(hosts)))
    if deepspeed_executable() is None:
        raise ValueError(f"replicas on other hosts ({named}) are started by DeepSpeed's launcher, which is not "
                         "installed here: pip install deepspeed (on every host)")
    if shutil.which("pdsh") is None:
        raise ValueError(f"replicas on other hosts ({named}) are started through DeepSpeed's pdsh runner, but "
                         "pdsh is not installed here: apt-get install pdsh (see the README's multi-host set-up)")
    if not os.path.isfile(hostfile):
        raise ValueError(f"replicas on other hosts ({named}) need the hostfile {hostfile}, which does not exist")


def deepspeed_executable() -> str | None:
    return shutil.which("deepspeed", path=os.path.dirname(sys.executable)) or shutil.which("deepspeed")


def remote_launch_command(host: str, devices: Sequence[int], master_port: int, program: Sequence[str],
                          hostfile: str, executable: str) -> list[str]:
    """DeepSpeed's line starting ``program`` on ``host`` (its ``devices``; none: every slot the hostfile
    gives it) through the pdsh runner. ``--force_multi``: one host, yet not this machine."""
    where = f"{host}:{','.join(map(str, devices))}" if devices else host
    return [executable, "-H", hostfile, "-i", where, "--force_multi", "--launcher", "pdsh", "--master_addr", host,
            "--master_port", str(master_port), "--no_ssh_check", "--no_local_rank", "--no_python", *program]


def remote_replica_command(folder: Path, index: int, program: Sequence[str], host: str, devices: Sequence[int],
                           torch_dist_port: int, hostfile: str, env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """Replica ``index``'s command on ``host`` and what it adds to the environment (the env file that
    carries ``env``'s forwarded variables)."""
    executable = deepspeed_executable()
    if executable is None:
        raise ValueError("DeepSpeed's launcher is not installed: pip install deepspeed")
    command = remote_launch_command(host, devices, replica_dist_port(torch_dist_port, index), program, hostfile,
                                    executable)
    return command, {DS_ENV_FILE: str(write_env_file(folder, index, env)), **ssh_keepalive(env)}


def ssh_keepalive(env: Mapping[str, str]) -> dict[str, str]:
    """pdsh's ssh probes the host every few seconds, so a host that vanished (no connection closed) ends
    the ssh session, and so the launcher, which tells the router the replica is lost. After the user's
    own ssh options: ssh keeps the first value given."""
    own = env.get(PDSH_SSH_ARGS_APPEND, "").strip()
    return {PDSH_SSH_ARGS_APPEND: f"{own} {SSH_KEEPALIVE}".strip()}


def forwarded_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` a remote replica gets: those it reads, never one that looks secret."""
    return {name: value for name, value in env.items()
            if name.startswith(FORWARDED_PREFIXES) and name not in NOT_FORWARDED and "\n" not in value
            and not any(mark in name.upper() for mark in SECRET_MARKS)}


def write_env_file(folder: Path, index: int, env: Mapping[str, str]) -> Path:
    """``NAME=value`` lines (DeepSpeed's ``.deepspeed_env`` format) in the deployment's folder (private)."""
    path = Path(folder) / f"replica-{index}.env"
    lines = "".join(f"{name}={value}\n" for name, value in sorted(forwarded_environment(env).items()))
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(lines)
    return path
