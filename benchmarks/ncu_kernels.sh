#!/bin/sh
# Nsight Compute over benchmarks/ncu_kernels.py on the GPU machine: one launch of each of issue 18's slow kernels
# at its real shape, profiled, and a digest of what holds each back (stall reasons, DRAM throughput, occupancy).
#
#     sh benchmarks/ncu_kernels.sh "$OUT" [KERNELS]     (from the repository root; carry .whl as for gpu_setup.sh)
#
# Writes OUT/ncu.csv (ncu's raw page: every metric of the sections below, a row per kernel), OUT/ncu.log and
# OUT/ncu-digest.txt. KERNELS: ncu_kernels.py's --kernels (default all). The clocks are left alone
# (--clock-control none), as the device notes ask. ncu needs the Firecracker runtime's counters: where it
# cannot read them (gVisor), ncu.log says so and the digest is empty.
out=${1:?usage: sh benchmarks/ncu_kernels.sh OUT [KERNELS]}
mkdir -p "$out" || exit 1
if [ "${NCU_SETUP:-1}" != 0 ]; then
    . benchmarks/gpu_setup.sh > "$out/ncu-setup.log" 2>&1 || { tail -20 "$out/ncu-setup.log"; exit 1; }
fi
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -n "$ncu" ] || { echo "[ncu] no ncu on this machine" >&2; exit 1; }
"$ncu" --clock-control none --profile-from-start off --target-processes all --csv --page raw \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
    --section Occupancy --section LaunchStats \
    python3 benchmarks/ncu_kernels.py --kernels "${2:-all}" > "$out/ncu.csv" 2> "$out/ncu.log"
rc=$?
python3 benchmarks/ncu_kernels.py --digest "$out/ncu.csv" | tee "$out/ncu-digest.txt"
exit $rc
