#!/bin/sh
# A/B on one GPU in one call: an earlier tree then the working tree, each bench_llama's checkpoint + ours
# sections (W1/W2/W3/W4), the same checkpoint reused. Before the call, here:
#     mkdir -p .base && git archive <REV> | tar -x -C .base      (.base/ is git-ignored through .git/info/exclude)
# then one device call from the repository root, carry [".whl", ".base"]:  sh benchmarks/ab_before_after.sh
set -u
root=$PWD
cp -r .whl .base/.whl
cd .base && . benchmarks/gpu_setup.sh > $OUT/base-setup.log 2>&1 || { tail $OUT/base-setup.log; exit 1; }
python3 benchmarks/bench_llama.py --sections checkpoint,ours --time-budget-s 230 --budgets checkpoint=60,ours=170 \
  --out $OUT/base.json > $OUT/base.log 2>&1; tail -25 $OUT/base.log
cd "$root" && . benchmarks/gpu_setup.sh > $OUT/new-setup.log 2>&1 || { tail $OUT/new-setup.log; exit 1; }
python3 -c "import mii_core, mii_plugin_llama; print(mii_core.__file__, mii_plugin_llama.__file__)"
python3 benchmarks/bench_llama.py --sections checkpoint,ours --time-budget-s 200 --budgets checkpoint=20,ours=180 \
  --out $OUT/new.json > $OUT/new.log 2>&1; tail -25 $OUT/new.log
