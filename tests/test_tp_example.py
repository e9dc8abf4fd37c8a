"""The seed's example script on two CPU ranks (gloo), under torchrun and under the deepspeed launcher."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.tp_launch import TESTS, free_port, worker_env

EXAMPLE = TESTS / "support" / "mii_example.py"
DEEPSPEED = shutil.which("deepspeed", path=str(Path(sys.executable).parent))


def _run(command: list[str], model: Path) -> str:
    done = subprocess.run(command, env=worker_env(MII_EXAMPLE_MODEL=str(model)), capture_output=True, text=True,
                          timeout=180, cwd=TESTS)
    assert done.returncode == 0, f"{command[:3]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout


def _check_outputs(stdout: str) -> None:
    """Rank 0 printed its two responses, rank 1 an empty list (MII's all_rank_output=False)."""
    assert "rank 1: []" in stdout
    # the two ranks share one stdout: a line of one may land inside the other's, so no anchors
    rank0 = re.search(r"rank 0: \[(.+)\]", stdout, re.DOTALL)
    assert rank0 and rank0.group(1).strip(), stdout[-2000:]
    assert stdout.count("rank 0: ") == 1


def test_example_under_torchrun(checkpoint):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(EXAMPLE)]
    _check_outputs(_run(command, checkpoint("gqa")))


@pytest.mark.skipif(DEEPSPEED is None, reason="deepspeed is not installed (pip install -e '.[test]')")
def test_example_under_deepspeed_launcher(checkpoint):
    command = [DEEPSPEED, "--num_gpus", "2", "--master_port", str(free_port()), str(EXAMPLE)]
    _check_outputs(_run(command, checkpoint("gqa")))
