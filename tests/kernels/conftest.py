"""Every interpreted kernel launch of this process is recorded (tests/kernels/test_compiles_for_gpu.py then
compiles each for sm_90; see tests/support/gpu_compile.py): into the file MII_RECORD_TRITON_LAUNCHES names,
or, under the interpreter, into a file of this process in the folder MII_TRITON_LAUNCH_DIR names (`make test`
sets it, so that the compile check reads what the suite's own kernel tests launched instead of running them
all a second time)."""
import os
import sys
from pathlib import Path

import pytest


def _launch_file():
    if os.environ.get("MII_RECORD_TRITON_LAUNCHES"):
        return Path(os.environ["MII_RECORD_TRITON_LAUNCHES"])
    if os.environ.get("MII_TRITON_LAUNCH_DIR") and os.environ.get("TRITON_INTERPRET") == "1":
        folder = Path(os.environ["MII_TRITON_LAUNCH_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"launches-{os.getpid()}.jsonl"
    return None


_LAUNCHES = _launch_file()
if _LAUNCHES is not None:
    from support.gpu_compile import record_launches

    record_launches(_LAUNCHES)


@pytest.fixture(autouse=True)
def _give_back_gpu_memory():
    """gpu_checks.sh runs eight kernel-test processes beside the parity checks on one GPU: each hands its
    freed blocks back after every test, or the caches the real-shape cases leave behind starve the next big
    one elsewhere (a 3.5 GB MoE case found 3.4 GB free on the H200, 2026-12-02)."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
