"""benchmarks/ncu_kernels.py: its digest of Nsight Compute's raw CSV (a file shaped as ncu writes it, values by
hand), and its CPU smoke run's argument checks."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import ncu_kernels  # noqa: E402

RAW = '''"ID","Kernel Name","gpu__time_duration.sum","dram__throughput.avg.pct_of_peak_sustained_elapsed",\
"launch__registers_per_thread","smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio",\
"smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio",\
"smsp__average_warps_issue_stalled_wait_per_issue_active.ratio"
"","","usecond","%","register/thread","ratio","ratio","ratio"
"0","_gemv_kernel","61.5","64.2","96","3.10","12.40","0.80"
"1","_decode_kernel","240.0","52.0","168","1,204.5","2.00","4.50"
'''


def test_digest_orders_each_kernels_stall_reasons(tmp_path):
    path = tmp_path / "ncu.csv"
    path.write_text(RAW)
    gemv, attention = ncu_kernels.digest(str(path), top=2)
    assert gemv.startswith("_gemv_kernel: µs 61.5, DRAM TB/s ?, DRAM % 64.2, occupancy % ?, registers 96, grid ?")
    assert gemv.endswith("stalls: long_scoreboard 12.40, barrier 3.10")
    assert attention.endswith("stalls: barrier 1204.50, wait 4.50")


# as the H200's ncu wrote it on 2026-12-03 (its columns cut to these): times in ns, DRAM's share named
# gpu__dram_throughput, its rate in byte/s with thousands separators
RAW_H200 = '''"ID","Kernel Name","gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed","dram__bytes.sum.per_second",\
"gpu__time_duration.sum","launch__grid_size"
"","","%","byte/s","ns",""
"0","_gemv_kernel","66.05","3,175,383,573,243.01","37,792","3,584"
'''


def test_digest_converts_the_units_row(tmp_path):
    path = tmp_path / "ncu.csv"
    path.write_text(RAW_H200)
    (gemv,) = ncu_kernels.digest(str(path))
    # 37,792 ns = 37.8 µs; 3,175,383,573,243 byte/s = 3.18 TB/s
    assert gemv == "_gemv_kernel: µs 37.8, DRAM TB/s 3.18, DRAM % 66.05, occupancy % ?, registers ?, grid 3,584; stalls: ?"


def test_digest_of_a_file_without_kernels(tmp_path):
    path = tmp_path / "ncu.csv"
    path.write_text("==PROF== Failed to initialize the profiler\n")
    assert ncu_kernels.digest(str(path)) == [f"no kernel rows in {path}"]


def test_unknown_kernels_are_refused(capsys):
    with pytest.raises(SystemExit):
        ncu_kernels.parse_args(["--kernels", "gemv_fp8,gemv_fp4"])
    assert "unknown kernels ['gemv_fp4']" in capsys.readouterr().err


def test_cpu_smoke_run_launches_each_kernel_twice():
    """The shrunk run under the interpreter: every kernel group builds, compiles and launches (once to warm
    up, once in the profiled range)."""
    import os
    import subprocess

    script = Path(ncu_kernels.__file__)
    done = subprocess.run([sys.executable, str(script), "--shrink", "16", "--kernels", "gemv_fp8,gemv_bf16,quantize"],
                          env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [line.split(": ")[0] for line in done.stdout.splitlines()] == [
        "[ncu_kernels] gemv_fp8", "[ncu_kernels] gemv_bf16", "[ncu_kernels] quantize"]
