"""The benchmark of issue 8 in one command: ceilings, honest floors, mii-core and the HF peers on one GPU.

    python3 benchmarks/bench_llama.py --out $OUT/bench.json            # H100: ~9 minutes (--time-budget-s)
    python3 benchmarks/bench_llama.py --tiny --out /tmp/bench-tiny.json  # CPU smoke run, toy shapes
    python3 benchmarks/bench_llama.py --sections ceilings,gemma2 --out $OUT/gemma2.json  # a family row (issue 17)
    python3 benchmarks/bench_llama.py --quantization-mode fp8,wf8af16,wf6af16 ...  # each mode beside bf16

Sections run in order, each in a process of its own (sections.py) with a time limit: it may run until the
sum of its budget and the budgets before it has passed (so time one section leaves over goes to the next),
never past --time-budget-s; at its limit it is stopped and what it measured so far is kept. A section that
fails is recorded under `errors` and the run goes on. The results JSON is rewritten after every section;
at the end the floors, ratios and targets are added and a markdown table is printed (and written beside
the JSON as .md). Plot: `python benchmarks/plot_results.py RESULTS.json` where matplotlib is installed.
See benchmarks/RESULTS.md.
"""

import argparse
import datetime
import importlib
import importlib.metadata as md
import json
import os
import platform
import shlex
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import families  # noqa: E402
import floors  # noqa: E402
import report  # noqa: E402
from phases import stop_group, write_json  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEMS = ("ours", "hf_generate", "hf_cb", "hf_static")
WORKLOADS = ("W1", "W2", "W3", "W4", "MOE")
# (section, budget in seconds on the H100, least time worth starting it with). Budgets are estimates from
# the 2026-11-24/25 runs and add up to the default --time-budget-s; a smaller one scales them down.
PLAN = (
    ("ceilings", 20, 5),
    ("checkpoint", 50, 45),  # its build took 27-40 s on the H200: a shorter budget stops it half-written
    ("decode_chain", 25, 10),
    ("ours", 130, 30),
    ("ours_quant", 150, 30),  # only with --quantization-mode: W3, W2, W1 in each mode
    ("ours_prefix_alt", 40, 20),
    ("ours_fp8kv", 60, 30),  # only with --kv-cache-dtype fp8 (an engine per mode: give it more with --quantization-mode)
    ("hf", 90, 30),
    ("hf_static", 90, 45),
    ("mixtral", 75, 30),
    # issue 17's family rows (families.py), only when named in --sections: a checkpoint built through
    # transformers (~16-19 GB), our start-up and W1, HF load and W1. With ceilings both fit the default
    # --time-budget-s unscaled (a scaled-down plan leaves ceilings too little); one alone can have more
    ("qwen3_moe", 250, 60),
    ("gemma2", 250, 60),
)
FAMILY_SECTIONS = set(families.FAMILIES)  # they need neither the Llama checkpoint nor a default run's time
NO_LLAMA_CHECKPOINT = {"ceilings"} | FAMILY_SECTIONS
MARGIN_S = 8  # a section's own deadline comes this long before it is stopped: time to free and save
KILL_GRACE_S = 5


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "bench.json"))
    p.add_argument("--workloads", default="w1,w2,w3,w4,moe", help="comma list of " + ",".join(WORKLOADS).lower())
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma list of " + ",".join(SYSTEMS))
    p.add_argument("--sections", default=None, help="comma list to run only these of: " + ",".join(n for n, *_ in PLAN))
    p.add_argument("--budgets", default="", help="override section budgets, e.g. ours=200,mixtral=60")
    p.add_argument("--time-budget-s", type=float, default=520.0, help="the whole run (sections stop at it)")
    p.add_argument("--w1-requests", type=int, default=None, help="default 256 (tiny: 8)")
    p.add_argument("--peer-w1-requests", type=int, default=64, help="HF peers run W1's first K requests")
    p.add_argument("--w1-logprobs", type=int, default=0,
                   help="N > 0: our engine runs W1 a second time with logprobs=N on every request (ours.W1.logprobs)")
    p.add_argument("--w2-repeats", type=int, default=3, help="timings per W2 length; the median counts")
    p.add_argument("--hf-batch", type=int, default=64, help="batch size of the padded static generate peer")
    p.add_argument("--ckpt", default=None, help="Llama checkpoint folder (default /tmp/llama3-8b-random)")
    p.add_argument("--moe-ckpt", default=None, help="Mixtral-shaped checkpoint folder (default /tmp/mixtral-4l-random)")
    p.add_argument("--engine-kwargs", default="{}", help="JSON of keyword options for mii_core.pipeline")
    p.add_argument("--quantization-mode", default="", help="comma list of " + ",".join(floors.MODE_WEIGHT_BYTES)
                   + ": our engine runs W3, W2, W1 (and the Mixtral-shaped W1) in each mode too, beside bf16")
    p.add_argument("--kv-cache-dtype", default="auto", choices=("auto", "fp8"),
                   help="fp8: W1 also runs with an FP8 KV cache (a second engine), beside the default one")
    p.add_argument("--tiny", action="store_true", help="tiny float32 models on the CPU: smoke run")
    p.add_argument("--skip-ceilings", action="store_true")
    p.add_argument("--moe-peer-alone", action="store_true",
                   help="run the Mixtral-shaped HF peer even when no mii-core plugin serves mixtral")
    p.add_argument("--stub-engine", action="store_true", help="stand-in for mii_core (stub_engine.py): smoke only")
    p.add_argument("--in-process", action="store_true", help="sections in this process: no hard time limits")
    args = p.parse_args(argv)
    args.workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if not set(args.workloads) <= set(WORKLOADS) or not set(args.systems) <= set(SYSTEMS):
        p.error(f"--workloads from {WORKLOADS}, --systems from {SYSTEMS}")
    args.w1_requests = args.w1_requests or (8 if args.tiny else 256)
    args.ckpt = args.ckpt or ("/tmp/llama-tiny-random" if args.tiny else "/tmp/llama3-8b-random")
    args.moe_ckpt = args.moe_ckpt or ("/tmp/mixtral-tiny-random" if args.tiny else "/tmp/mixtral-4l-random")
    args.quantization_modes = [m.strip() for m in args.quantization_mode.split(",") if m.strip()]
    if not set(args.quantization_modes) <= set(floors.MODE_WEIGHT_BYTES):
        p.error(f"--quantization-mode from {','.join(floors.MODE_WEIGHT_BYTES)}")
    args.budgets = {k: float(v) for k, v in (kv.split("=") for kv in args.budgets.split(",") if kv)}
    names = {n for n, *_ in PLAN}
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()] if args.sections else None
    unknown = (set(args.sections or ()) | set(args.budgets)) - names
    if unknown:
        p.error(f"unknown section(s) {sorted(unknown)}; the sections are {', '.join(n for n, *_ in PLAN)}")
    return args


def chosen_sections(args):
    """The sections the options ask for, in PLAN order (the checkpoint with any that needs it)."""
    if args.sections:
        wanted = set(args.sections) | ({"checkpoint"} if set(args.sections) - NO_LLAMA_CHECKPOINT else set())
    else:
        ours, hf = "ours" in args.systems, {"hf_generate", "hf_cb"} & set(args.systems)
        wl = set(args.workloads)
        wanted = {"checkpoint"}
        wanted |= set() if args.skip_ceilings else {"ceilings", "decode_chain"}
        wanted |= {"ours"} if ours and wl & {"W1", "W2", "W3", "W4"} else set()
        wanted |= {"ours_quant"} if ours and args.quantization_modes and wl & {"W1", "W2", "W3"} else set()
        wanted |= {"ours_prefix_alt"} if ours and "W4" in wl else set()
        wanted |= {"ours_fp8kv"} if ours and "W1" in wl and args.kv_cache_dtype == "fp8" else set()
        wanted |= {"hf"} if hf and wl & {"W1", "W2", "W3"} else set()
        wanted |= {"hf_static"} if "hf_static" in args.systems and "W2" in wl else set()
        wanted |= {"mixtral"} if "MOE" in wl and ({"ours", "hf_generate"} & set(args.systems)) else set()
    return fit_budgets([(n, b, m) for n, b, m in PLAN if n in wanted], args.budgets, args.time_budget_s)


def fit_budgets(plan, given, total_s):
    """The plan's budgets within ``total_s``: those ``given`` (--budgets) as given, the others scaled down into
    the time left, never below their least (the random checkpoint's build, stopped at a scaled-down 31 s, left
    every other section without a checkpoint twice on the H200, 2026-12-03)."""
    fixed = sum(given[n] for n, _, _ in plan if n in given)
    rest = sum(b for n, b, _ in plan if n not in given)
    scale = min(1.0, max(total_s - fixed, 0.0) / max(rest, 1e-9))
    return [(n, given[n] if n in given else max(b * scale, m), m) for n, b, m in plan]


def section_end(planned_end, now, deadline, min_s):
    """When a section must stop: its planned end, moved out to give it its least (``min_s``) where the plan's
    earlier sections ran late, never past the deadline; None when the deadline leaves less than its least. (A
    section whose scaled budget was exactly its least started a few ms after its planned start and was skipped,
    "45s left for it, needs 45", on the H200 on 2026-12-03.)"""
    end = min(max(planned_end, now + min_s), deadline)
    return end if end - now >= min_s else None


def env_info():
    def version(dist):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None
    info = {"python": platform.python_version(), "host": platform.node(),
            **{d: version(d) for d in ("torch", "transformers", "triton", "mii-core", "mii-kernels")}}
    try:  # not torch.cuda: the runner must hold no CUDA context while the sections use the GPU
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        info["gpu"] = smi.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        info["gpu"] = None
    return info


class Runner:
    sections_module = "sections"  # the module (beside this file) whose run() / main() run one section

    def __init__(self, args, argv):
        self.args, self.t0 = args, time.time()
        self.deadline = self.t0 + args.time_budget_s
        self.res = {"command": " ".join(shlex.quote(a) for a in [sys.executable] + list(argv)),
                    "cwd": os.getcwd(), "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                    "args": vars(args), "env": env_info(), "sections": {}, "figures": {}, "errors": {},
                    "skipped": [], "info": {}}
        self.work_dir = os.path.splitext(os.path.abspath(args.out))[0] + ".parts"

    def log(self, msg):
        print(f"[bench {time.time() - self.t0:7.1f}s] {msg}", flush=True)

    def save(self):
        write_json(self.args.out, self.res)

    def run_all(self, plan):
        planned_end = self.t0
        for name, budget, min_s in plan:
            planned_end += budget
            end = section_end(planned_end, time.time(), self.deadline, min_s)
            if end is None:
                self.log(f"SKIP section {name}: {max(self.deadline - time.time(), 0):.0f}s left in all, needs {min_s}")
                self.res["skipped"].append(name)
                self.res["sections"][name] = {"status": "skipped: out of time", "budget_s": budget}
                self.save()
                continue
            self.run_section(name, budget, end)

    def run_section(self, name, budget, end):
        os.makedirs(self.work_dir, exist_ok=True)
        ctx = self.section_ctx(end)
        ctx_path, part_path = (os.path.join(self.work_dir, f"{name}.{k}.json") for k in ("ctx", "part"))
        write_json(ctx_path, ctx)
        self.log(f"section {name}: up to {end - time.time():.0f}s (budget {budget:.0f}s)")
        start = time.time()
        if self.args.in_process:
            sections = importlib.import_module(self.sections_module)
            try:
                sections.run(name, ctx, part_path)
                status = "ok"
            except Exception as e:  # noqa: BLE001
                status = f"failed: {type(e).__name__}: {e}"
        else:
            status = self._subprocess(name, ctx_path, part_path, end)
        self.res["sections"][name] = {"status": status, "seconds": time.time() - start, "budget_s": budget}
        running = self._merge(name, part_path)
        if running and status != "ok":
            self.res["errors"][running] = f"section {name} {status} while this ran"
        self.log(f"section {name}: {status} after {time.time() - start:.1f}s")
        self.save()

    def section_ctx(self, end):
        """What a section process is given: the options, what earlier sections built, its deadline."""
        return {"args": vars(self.args), "checkpoint": self.res.get("checkpoint"), "t0": self.t0,
                "deadline": end - MARGIN_S}

    def _subprocess(self, name, ctx_path, part_path, end):
        cmd = [sys.executable, os.path.join(HERE, f"{self.sections_module}.py"), "--ctx", ctx_path, "--section", name,
               "--part", part_path]
        proc = subprocess.Popen(cmd, start_new_session=True)  # its own group: a kill reaches compile workers
        try:
            rc = proc.wait(timeout=max(end - time.time(), 1))
            return "ok" if rc == 0 else f"failed: exit code {rc}"
        except subprocess.TimeoutExpired:
            stop_group(proc, KILL_GRACE_S)
            return "stopped at its time limit"

    def _merge(self, name, part_path):
        try:
            with open(part_path) as f:
                part = json.load(f)
        except (OSError, ValueError) as e:
            self.res["errors"][name] = f"no results from the section: {type(e).__name__}: {e}"
            return None
        self.res["figures"].update(part["figures"])
        self.res["errors"].update(part["errors"])
        self.res["skipped"] += part["skipped"]
        info = part["info"]
        for key in ("checkpoint", "moe_checkpoint"):
            if key in info:
                self.res[key] = info.pop(key)
        self.res.setdefault("family_checkpoints", {}).update(info.pop("family_checkpoints", {}))
        self.res.setdefault("kernel_variants_made", {}).update(info.pop("kernel_variants_made", {}))
        self.res["info"].update(info)
        return part.get("running")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    runner = Runner(args, [os.path.relpath(__file__)] + list(argv))
    runner.log(f"env {json.dumps(runner.res['env'])}")
    plan = chosen_sections(args)
    runner.log(f"sections {[n for n, *_ in plan]}; budget {args.time_budget_s:.0f}s; results -> {args.out}")
    runner.run_all(plan)
    if "checkpoint" not in runner.res and not runner.res.get("family_checkpoints"):
        runner.log("no checkpoint: nothing to report")
        return 1
    report.complete(runner.res)
    runner.save()
    md_text = report.markdown(runner.res)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(md_text)
    runner.log(f"finished in {time.time() - runner.t0:.0f}s; skipped: {runner.res['skipped'] or 'none'}; "
               f"errors: {list(runner.res['errors']) or 'none'}")
    print(md_text, flush=True)
    print(f"results JSON: {os.path.abspath(args.out)} (table: {os.path.splitext(args.out)[0]}.md); plot with "
          f"`python benchmarks/plot_results.py {args.out}` where matplotlib is installed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
