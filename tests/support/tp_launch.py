"""Runs tests/support/tp_worker.py on two ranks, under torchrun (or by hand with the launcher's variables
set, so that one rank can be killed without a launcher killing the other), and reads back each rank's results."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("tp_worker.py")
TESTS = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_env(**extra: str) -> dict:
    # the ranks are CPU processes over gloo, as in CI, also on a GPU machine: two ranks on its one GPU would be
    # refused by NCCL ("Duplicate GPU detected"); benchmarks/multi_gpu.py runs ranks on GPUs of their own
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("WORLD_SIZE", None)
    return {**env, **extra}


def run_under_torchrun(jobs: list[dict], out_dir: Path, timeout: float = 240) -> list[dict]:
    jobs_file = out_dir / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(WORKER), str(jobs_file), str(out_dir)]
    done = subprocess.run(command, env=worker_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(2)]


def start_ranks_by_hand(jobs: list[dict], out_dir: Path, **extra_env: str) -> list[subprocess.Popen]:
    """Two worker processes given RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT as a launcher would."""
    jobs_file = out_dir / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    port = str(free_port())
    return [subprocess.Popen([sys.executable, str(WORKER), str(jobs_file), str(out_dir)],
                             env=worker_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                            MASTER_PORT=port, **extra_env),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for r in range(2)]
