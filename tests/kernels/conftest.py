"""With MII_RECORD_TRITON_LAUNCHES naming a file, every interpreted kernel launch of this run is recorded there
(tests/kernels/test_compiles_for_gpu.py then compiles each for sm_90; see tests/support/gpu_compile.py)."""
import os
from pathlib import Path

if os.environ.get("MII_RECORD_TRITON_LAUNCHES"):
    from support.gpu_compile import record_launches

    record_launches(Path(os.environ["MII_RECORD_TRITON_LAUNCHES"]))
