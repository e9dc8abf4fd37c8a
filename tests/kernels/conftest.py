"""With MII_RECORD_TRITON_LAUNCHES naming a file, every interpreted kernel launch of this run is recorded there
(tests/kernels/test_compiles_for_gpu.py then compiles each for sm_90; see tests/support/gpu_compile.py)."""
import os
import sys
from pathlib import Path

import pytest

if os.environ.get("MII_RECORD_TRITON_LAUNCHES"):
    from support.gpu_compile import record_launches

    record_launches(Path(os.environ["MII_RECORD_TRITON_LAUNCHES"]))


@pytest.fixture(autouse=True)
def _give_back_gpu_memory():
    """gpu_checks.sh runs eight kernel-test processes beside the parity checks on one GPU: each hands its
    freed blocks back after every test, or the caches the real-shape cases leave behind starve the next big
    one elsewhere (a 3.5 GB MoE case found 3.4 GB free on the H200, 2026-12-02)."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
