"""Every Triton kernel launch the CPU kernel tests make (under the interpreter) compiles for an H100/H200
(sm_90) with Triton's own compiler, down to a cubin: the interpreter runs code a GPU compile refuses (two
returns of different dtypes in one function, say), which once reached the GPU run as 400 failures."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parents[1]


def _recorded_by_this_run(into: Path) -> bool:
    """The launches the suite's kernel tests recorded (MII_TRITON_LAUNCH_DIR, set by `make test`, whose
    parallel run has ended before this test's `alone` run) gathered into one file; False where there are none."""
    folder = os.environ.get("MII_TRITON_LAUNCH_DIR")
    recorded = sorted(Path(folder).glob("launches-*.jsonl")) if folder else []
    into.write_text("".join(path.read_text() for path in recorded))
    return into.stat().st_size > 0


def _record_by_running_the_kernel_tests(into: Path) -> None:
    record = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=",
         str(TESTS / "kernels"), "--deselect", f"{Path(__file__).relative_to(TESTS.parent)}"],
        cwd=TESTS.parent, env={**os.environ, "TRITON_INTERPRET": "1", "MII_RECORD_TRITON_LAUNCHES": str(into)},
        capture_output=True, text=True, timeout=1200)
    assert record.returncode == 0, f"the kernel tests failed:\n{record.stdout[-3000:]}"


# `alone`: in `make test` after the parallel run, whose kernel tests recorded their launches; run by itself
# elsewhere, it runs the kernel tests first to record them
@pytest.mark.alone
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the kernel tests compile every kernel for real")
def test_every_kernel_launch_of_the_cpu_tests_compiles_for_sm90(tmp_path):
    launches = tmp_path / "launches.jsonl"
    if not _recorded_by_this_run(launches):
        _record_by_running_the_kernel_tests(launches)
    assert launches.exists() and launches.stat().st_size > 0, "no kernel launch was recorded"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    compiled = subprocess.run([sys.executable, "-m", "support.gpu_compile", str(launches)], cwd=TESTS, env=env,
                              capture_output=True, text=True, timeout=1800)
    assert compiled.returncode == 0, compiled.stdout[-8000:] + compiled.stderr[-2000:]
