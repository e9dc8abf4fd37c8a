#!/bin/sh
# The GPU correctness run of issue 8 in one call: the Triton kernel tests (compiled, with their real-shape
# bf16 cases; the quantized linear and experts and the FP8 KV cache's among them), benchmarks/gpu_parity.py
# (every architecture against HF transformers), tests/test_quant_parity.py (each quantization mode's greedy
# output against its PyTorch reference, every architecture, on the GPU's kernels; tests/test_prequantized.py,
# checkpoints shipped in FP8 against HF on their dequantized weights) and
# tests/test_fp8_kv_cache.py (greedy of the FP8 KV cache against HF with K/V rounded through e4m3: Triton
# kernels and decode CUDA graphs, float32) and tests/legacy/test_cuda_graphs_gpu.py (MII Legacy's
# enable_cuda_graph: the encoder tasks' graphs and the Stable Diffusion UNet's against eager and HF), each logged.
#
#     sh benchmarks/gpu_checks.sh "$OUT"        (from the repository root; carry .whl as for gpu_setup.sh,
#                                                and .cache: the trained tiny model of the perplexity test)
#
# Writes FOLDER/setup.log, FOLDER/kernels.log (every kernel-test process, one after the other), FOLDER/parity.log,
# FOLDER/quant_parity.log, FOLDER/fp8kv.log, FOLDER/cuda_graphs.log and FOLDER/summary.txt; exits 1 if any check failed. Runs in its own shell, so gpu_setup.sh's PYTHONPATH stays here.
# GPU_CHECKS_SETUP=0 skips the set-up (an environment that has everything already, e.g. `make install`'s
# .venv activated: a CPU dry run of this file). CHECKS_PACK=1 packs the logs (below). PARITY_ARGS go to every gpu_parity.py process (e.g.
# "--no-bf16": the float32 checks only); KERNEL_SHARDS, PARITY_SHARDS, CHECKS_BUDGET_S as below.
out=${1:?usage: sh benchmarks/gpu_checks.sh LOG_FOLDER}
mkdir -p "$out" || exit 1

if [ "${GPU_CHECKS_SETUP:-1}" != 0 ]; then
    . benchmarks/gpu_setup.sh > "$out/setup.log" 2>&1 || { tail -20 "$out/setup.log"; exit 1; }
    tail -4 "$out/setup.log"
fi

# The checks run side by side, so that the whole script fits one 10-minute device call: Triton compiles on
# one CPU core per process, and the kernel tests (most of their time is compiling; the attention-option
# variants alone took 370 s in one process on the H200) are split into KERNEL_SHARDS processes by test id.
# Each parity engine takes a fiftieth of the free memory for its KV cache instead of 0.9 (a tenth, then a twentieth, each
# left a real-shape kernel test out of memory on the H200 once), leaving room for
# the other processes and the kernel tests' real-shape tensors. Kernels compiled for the GPU: the interpreter only where there is none.
unset TRITON_INTERPRET
# one host thread per process: the checks run side by side on the machine's cores, and torch's default
# (a thread per core in each process) made every tiny host op of 15 processes wait on OpenMP barriers (the
# kernel tests' dense references never finished a test in 380 s on the H200's 16 cores)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
shards=${KERNEL_SHARDS:-8}
# every check process is cut at CHECKS_BUDGET_S (a cut one fails), so that the logs are always gathered
# into FOLDER before the device call's 10 minutes end (a call cut from outside brings back nothing of them)
budget=${CHECKS_BUDGET_S:-420}
# the shards' id lists and logs stay in a scratch folder (the device tool brings back only a few files);
# FOLDER gets them joined into kernels.log
work=$(mktemp -d) ids=$work/ids.txt
python3 -m pytest -q --collect-only -p no:cacheprovider -p no:timeout tests/kernels 2>&1 | grep '::' > "$ids"
echo "[kernels] $(wc -l < "$ids") tests in $shards processes"
shard_pids=""
i=0
while [ "$i" -lt "$shards" ]; do
    awk -v n="$shards" -v i="$i" 'NR % n == i' "$ids" > "$work/ids-$i.txt"
    # the ids go in a file (pytest's @file, one per line): they hold brackets and spaces
    # SIGINT, not TERM: pytest then stops cleanly and still prints its tally and slowest tests
    timeout -s INT -k 20 "$budget" python3 -m pytest -q -p no:cacheprovider -p no:timeout --durations=8 \
        "@$work/ids-$i.txt" \
        > "$work/kernels-$i.log" 2>&1 &
    shard_pids="$shard_pids $!"
    i=$((i + 1))
done
# gpu_parity in PARITY_SHARDS processes too (each case builds several engines and captures their graphs)
parity_pids=""
i=0
parity_shards=${PARITY_SHARDS:-8}
while [ "$i" -lt "$parity_shards" ]; do
    timeout -s INT -k 20 "$budget" python3 benchmarks/gpu_parity.py --kv-fraction 0.02 --shard "$i/$parity_shards" $PARITY_ARGS \
        > "$work/parity-$i.log" 2>&1 &
    parity_pids="$parity_pids $!"
    i=$((i + 1))
done
# each quantization mode's greedy parity (its engines take a fixed 64-block KV cache: see the test), that of
# checkpoints shipped in FP8 (the compressed-tensors cases skip unless its wheel and loguru's are in .whl), then
# each mode's perplexity on the trained tiny model (the FP8 GEMM path on a model whose greedy is not chaotic
# under e4m3 rounding; carry .cache, or it trains first, a few minutes)
timeout -s INT -k 20 "$budget" python3 -m pytest -q -p no:cacheprovider -p no:timeout --durations=8 -rA \
    tests/test_quant_parity.py tests/test_prequantized.py tests/test_quant_quality.py > "$work/quant-parity.log" 2>&1 &
quant_pid=$!
# the FP8 KV cache's greedy parity (each engine takes a twentieth of the free memory: the test's options)
timeout -s INT -k 20 "$budget" python3 -m pytest -q -p no:cacheprovider -p no:timeout --durations=8 \
    tests/test_fp8_kv_cache.py > "$out/fp8kv.log" 2>&1 &
fp8kv_pid=$!
# MII Legacy's enable_cuda_graph (tiny models; the UNet's cases skip unless diffusers came with .whl)
timeout -s INT -k 20 "$budget" python3 -m pytest -q -p no:cacheprovider -p no:timeout --durations=8 -rs \
    tests/legacy/test_cuda_graphs_gpu.py > "$out/cuda_graphs.log" 2>&1 &
graphs_pid=$!
parity=0
for pid in $parity_pids; do wait "$pid" || parity=1; done  # 124: cut at the budget
for log in "$work"/parity-*.log; do echo "== $log"; cat "$log"; done > "$out/parity.log"
kernels=0
for pid in $shard_pids; do wait "$pid" || kernels=1; done
[ -s "$ids" ] || kernels=1
fp8kv=0
wait "$fp8kv_pid" || fp8kv=1
for log in "$work"/kernels-*.log; do echo "== $log"; cat "$log"; done > "$out/kernels.log"
quant=0
wait "$quant_pid" || quant=1
graphs=0
wait "$graphs_pid" || graphs=1
cp "$work/quant-parity.log" "$out/quant_parity.log"

{
    echo "kernel tests (rc $kernels), one line per process (a process cut at ${budget} s ends mid-run):"
    for log in "$work"/kernels-*.log; do echo "    $(grep -E '(passed|failed|error)' "$log" | tail -1)"; done
    echo "gpu_parity (rc $parity), one line per process:"
    grep '\[parity\] summary' "$out/parity.log" | sed 's/^/    /'
    echo "    $(grep -c '\[parity\] summary' "$out/parity.log") of $parity_shards processes finished within ${budget} s"
    grep -E '^\[parity\] FAIL' "$out/parity.log"
    echo "quantization parity (rc $quant): $(grep -E '(passed|failed|error)' "$out/quant_parity.log" | tail -1)"
    grep -E '^FAILED' "$out/quant_parity.log"
    echo "fp8 KV cache greedy parity (rc $fp8kv): $(grep -E '(passed|failed|error)' "$out/fp8kv.log" | tail -1)"
    echo "legacy CUDA graphs (rc $graphs): $(grep -E '(passed|failed|error)' "$out/cuda_graphs.log" | tail -1)"
    grep -E '^FAILED' "$out/cuda_graphs.log"
} | tee "$out/summary.txt"
# CHECKS_PACK=1: the logs go into FOLDER/logs.tgz beside summary.txt (2 files), for a device call that also
# brings back a benchmark's files (a call brings back 8 files at most: the 7 logs crowded out the summary once)
if [ "${CHECKS_PACK:-0}" = 1 ]; then
    (cd "$out" && tar czf logs.tgz --exclude=logs.tgz --exclude=summary.txt . && find . -name '*.log' -delete)
fi
[ "$kernels" -eq 0 ] && [ "$parity" -eq 0 ] && [ "$quant" -eq 0 ] && [ "$fp8kv" -eq 0 ] && [ "$graphs" -eq 0 ]
