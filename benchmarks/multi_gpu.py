"""Issue 11's runs on one host with 2 (or 4) GPUs, in one command (benchmarks/README.md, "Several GPUs"):

    python3 benchmarks/multi_gpu.py --gpus 2 --out $OUT/multi.json            # 2 H200s: runs 1-3
    python3 benchmarks/multi_gpu.py --gpus 2 --only mixtral_tp --out $OUT/moe.json   # run 4, a second call
    python3 benchmarks/multi_gpu.py --tiny --gpus 2 --out /tmp/multi.json     # CPU dry run (gloo), tiny shapes
    python3 benchmarks/multi_gpu.py --gpus 1 --only tp_parity,replicas --out $OUT/multi.json   # rehearsal

--gpus 1 is a rehearsal on a one-GPU machine: only the sections that need one GPU run (the 8B checkpoint,
TP=1, HF's margins, one replica through the client), so the real shapes' GPU path is tried before a
multi-GPU machine is lent; it compares nothing.

Runs (--only picks them): tp_parity (greedy tokens of TP=2 against TP=1 on one GPU, HF's margin where they
part), tp_latency (W2 ms/token at TP 1, 2 and 4), tp_throughput (W1 at TP 2 against 1), replicas (W1
through the client: serve(replica_num=2) against one replica; with 4 GPUs also tensor_parallel=2,
replica_num=2), mixtral_tp (the whole Mixtral-8x7B shape: W1 and greedy parity, TP=2 against TP=1 on one
GPU). The runs share engines: each section is one engine set-up (multi_gpu_sections.py) in its own
process, with a time budget, as in bench_llama.py (whose Runner this reuses): stopped at its limit with
what it measured kept, a failure recorded under `errors`, the JSON rewritten after each section, the
markdown table printed at the end and written beside the JSON.
"""

import argparse
import json
import os
import sys

for _var, _value in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"),
                     ("NVSHMEM_DISABLE_NVLS", "1")):
    os.environ[_var] = _value  # issue 11: NVLink multicast off in this process and every one it starts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import multi_gpu_report  # noqa: E402
from bench_llama import Runner  # noqa: E402

RUNS = ("tp_parity", "tp_latency", "tp_throughput", "replicas", "mixtral_tp")
LLAMA_RUNS = {"tp_parity", "tp_latency", "tp_throughput", "replicas"}
TP_RUNS = {"tp_parity", "tp_latency", "tp_throughput"}
# (section, budget s on H200s, least time worth starting it, runs that need it, GPUs it needs). Estimates:
# an 8B build ~45 s (16 GB written at 0.4-0.6 GB/s on the H100: 26-37 s), so 93 GB of Mixtral ~150-230 s;
# an engine start-up (load + CUDA graph capture) 30-60 s per rank set; W1 at TP=1 ~20 s.
PLAN = (
    ("checkpoint", 50, 5, LLAMA_RUNS, 1),
    ("tp1", 100, 30, TP_RUNS, 1),
    ("tp2", 110, 40, TP_RUNS, 2),
    ("tp4", 90, 40, {"tp_latency"}, 4),
    ("parity_margin", 40, 20, {"tp_parity"}, 1),
    ("serve_r1", 100, 40, {"replicas"}, 1),
    ("serve_r2", 80, 40, {"replicas"}, 2),
    ("serve_tp2r2", 110, 50, {"replicas"}, 4),
    ("moe_checkpoint", 220, 30, {"mixtral_tp"}, 1),
    ("moe_tp2", 150, 60, {"mixtral_tp"}, 2),
    ("moe_tp1", 150, 60, {"mixtral_tp"}, 1),
    ("moe_parity_margin", 120, 60, {"mixtral_tp"}, 1),  # only with --moe-margins (HF loads all 93 GB), or tiny
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", type=int, required=True,
                   help="GPUs to use: 2 or 4 (the tiny run: CPU ranks); 1: a rehearsal of the one-GPU sections")
    p.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "multi.json"))
    p.add_argument("--only", default=None, help="comma list of runs: " + ",".join(RUNS))
    p.add_argument("--time-budget-s", type=float, default=540.0, help="the whole run (sections stop at it)")
    p.add_argument("--budgets", default="", help="override section budgets, e.g. tp2=140,serve_r1=80")
    p.add_argument("--w1-requests", type=int, default=None, help="W1 requests (default 256; tiny: 8)")
    p.add_argument("--w2-repeats", type=int, default=3, help="timings per W2 length; the median counts")
    p.add_argument("--client-concurrency", type=int, default=0, help="client threads for W1 (0: one per request)")
    p.add_argument("--ckpt", default=None, help="Llama checkpoint folder (default /tmp/llama3-8b-random)")
    p.add_argument("--moe-ckpt", default=None, help="Mixtral-shaped folder (default /tmp/mixtral-8x7b-random)")
    p.add_argument("--engine-kwargs", default="{}", help="JSON of model options for every engine")
    p.add_argument("--moe-margins", action="store_true", help="HF margins for Mixtral too (loads 93 GB in HF)")
    p.add_argument("--tiny", action="store_true", help="tiny float32 models on the CPU (gloo ranks): dry run")
    p.add_argument("--in-process", action="store_true", help="sections in this process: no hard time limits")
    args = p.parse_args(argv)
    args.runs = [r.strip() for r in (args.only or ",".join(RUNS)).split(",") if r.strip()]
    if set(args.runs) - set(RUNS):
        p.error(f"unknown run(s) {sorted(set(args.runs) - set(RUNS))}; the runs are {', '.join(RUNS)}")
    if args.gpus < 1:
        p.error("--gpus must be 2 or 4 (1: a rehearsal of the one-GPU sections, comparing nothing)")
    args.w1_requests = args.w1_requests or (8 if args.tiny else 256)
    args.ckpt = args.ckpt or ("/tmp/llama-tiny-random" if args.tiny else "/tmp/llama3-8b-random")
    args.moe_ckpt = args.moe_ckpt or ("/tmp/mixtral-tiny-full" if args.tiny else "/tmp/mixtral-8x7b-random")
    args.budgets = {k: float(v) for k, v in (kv.split("=") for kv in args.budgets.split(",") if kv)}
    unknown = set(args.budgets) - {n for n, *_ in PLAN}
    if unknown:
        p.error(f"unknown section(s) {sorted(unknown)} in --budgets; the sections are {', '.join(n for n, *_ in PLAN)}")
    json.loads(args.engine_kwargs)
    return args


def chosen_sections(args):
    """The sections the runs need on this many GPUs, in PLAN order, scaled to --time-budget-s if over it."""
    plan = [(n, args.budgets.get(n, b), m) for n, b, m, runs, gpus in PLAN
            if runs & set(args.runs) and gpus <= args.gpus
            and (n != "moe_parity_margin" or args.moe_margins or args.tiny)]
    scale = min(1.0, args.time_budget_s / max(sum(b for _, b, _ in plan), 1e-9))
    return [(n, b * scale, m) for n, b, m in plan]


class MultiGpuRunner(Runner):
    sections_module = "multi_gpu_sections"

    def section_ctx(self, end):
        return {**super().section_ctx(end), "moe_checkpoint": self.res.get("moe_checkpoint")}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    runner = MultiGpuRunner(args, [os.path.relpath(__file__)] + list(argv))
    runner.log(f"env {json.dumps(runner.res['env'])}")
    gpus = len((runner.res["env"].get("gpu") or "").splitlines())
    if not args.tiny and gpus < args.gpus:
        fewer = f", pass --gpus {gpus}" if gpus >= 2 else ""
        runner.log(f"--gpus {args.gpus} but nvidia-smi lists {gpus} GPU(s): ask for a machine with "
                   f"{args.gpus}{fewer}, or use --tiny for the CPU dry run")
        return 2
    plan = chosen_sections(args)
    runner.res["plan"] = [{"section": n, "budget_s": b} for n, b, _ in plan]
    runner.log(f"runs {args.runs}; sections {[n for n, *_ in plan]}; budget {args.time_budget_s:.0f}s; "
               f"results -> {args.out}")
    runner.run_all(plan)
    runner.res["summary"] = multi_gpu_report.summarise(runner.res)
    runner.save()
    md_text = multi_gpu_report.markdown(runner.res)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(md_text)
    runner.log(f"finished; skipped: {runner.res['skipped'] or 'none'}; errors: {list(runner.res['errors']) or 'none'}")
    print(md_text, flush=True)
    print(f"results JSON: {os.path.abspath(args.out)} (table: {os.path.splitext(args.out)[0]}.md)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
