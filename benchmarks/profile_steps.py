"""Where one engine step spends its time, per kernel category, for the benchmark's rows that miss their targets.

    python3 benchmarks/profile_steps.py --runs llama:bf16,llama:fp8,llama:fp8+fp8kv,qwen3_moe:bf16,gemma2:bf16 \\
        --out $OUT/profile_steps.json          # one GPU call: every run in a process of its own, ~9 minutes
    python3 benchmarks/profile_steps.py --family gemma2 --quantization-mode fp8 --kv-cache-dtype fp8
    python3 benchmarks/profile_steps.py --tiny --runs llama:bf16,qwen3_moe:bf16   # CPU smoke run, toy shapes

A run is FAMILY:WEIGHTS[+fp8kv]: FAMILY llama (checkpoint.py's Llama-3-8B shape), mixtral (its 4-layer
Mixtral-8x7B shape, bench_llama's moe row) or a families.py family
(qwen3_moe, gemma2), WEIGHTS bf16 (the checkpoint's own dtype; float32 when tiny) or a quantization mode
(fp8, wf8af16, wf6af16: mii_core.pipeline's quantization_mode), +fp8kv the FP8 KV cache
(inference_engine_config.kv_cache_dtype="fp8"). Without --runs, --family / --quantization-mode /
--kv-cache-dtype name one run. Each run builds (or reuses) its random checkpoint, starts the engine as the
benchmark does and measures three steps (step_scenarios.py): W2's decode step (batch 1), W1's (its 256
sequences at their mean decode context) and a W3 prefill step. For each it prints the wall time, the GPU
time by kernel category (kernel_categories.py has the rules) as ms and % of the wall time, the idle GPU
time (wall - kernel time: host work and gaps) and the top kernels; --out keeps it all as JSON.

Runs go one after another, each in a child process (its GPU memory handed back when it ends) with an equal
share of what is left of --time-budget-s; a run that fails or overruns is recorded with its error (and
what it measured so far) and the next one goes on.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import families  # noqa: E402
from kernel_categories import CATEGORIES, IDLE  # noqa: E402
from phases import stop_group, write_json  # noqa: E402

FAMILY_NAMES = ("llama", "mixtral", *families.FAMILIES)
QUANTIZATION_MODES = ("fp8", "wf8af16", "wf6af16")  # mii_core.config.engine.QUANTIZATION_MODES
MIN_RUN_S = {False: 45, True: 5}  # too little left for a start-up and three steps: skip the run
LOG_TAIL = 2000  # characters of a failed child's output kept in the results


@dataclass(frozen=True)
class RunSpec:
    family: str
    quantization_mode: str | None  # None: the checkpoint's dtype
    kv_cache_dtype: str  # "auto" or "fp8"

    @property
    def label(self) -> str:
        return f"{self.family}:{self.quantization_mode or 'bf16'}{'+fp8kv' if self.kv_cache_dtype == 'fp8' else ''}"


def parse_run(text: str) -> RunSpec:
    """FAMILY:WEIGHTS[+fp8kv] -> RunSpec; ValueError naming what is allowed."""
    family, _, weights = text.strip().partition(":")
    weights, _, kv = (weights or "bf16").partition("+")
    if family not in FAMILY_NAMES or weights not in ("bf16", *QUANTIZATION_MODES) or kv not in ("", "fp8kv"):
        raise ValueError(f"run {text!r}: want FAMILY:WEIGHTS[+fp8kv], FAMILY from {', '.join(FAMILY_NAMES)}, "
                         f"WEIGHTS bf16 or one of {', '.join(QUANTIZATION_MODES)}")
    return RunSpec(family, None if weights == "bf16" else weights, "fp8" if kv else "auto")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=None, help="comma list of FAMILY:WEIGHTS[+fp8kv] (overrides the three below)")
    p.add_argument("--family", default="llama", choices=FAMILY_NAMES)
    p.add_argument("--quantization-mode", default=None, choices=QUANTIZATION_MODES)
    p.add_argument("--kv-cache-dtype", default="auto", choices=("auto", "fp8"))
    p.add_argument("--tiny", action="store_true", help="tiny float32 models on the CPU: smoke run")
    p.add_argument("--ckpt-dir", default=None, help="folder for the checkpoints (default: bench_llama's /tmp paths)")
    p.add_argument("--out", default=None, help="results JSON (every run's scenarios, categories, top kernels)")
    p.add_argument("--time-budget-s", type=float, default=540.0, help="all runs together (each gets an equal share "
                   "of what is left)")
    p.add_argument("--print-top", type=int, default=8, help="top kernels printed a step (the JSON keeps 14)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # a run's label: be that run's process
    p.add_argument("--part", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.specs = ([parse_run(r) for r in args.runs.split(",") if r.strip()] if args.runs else
                      [RunSpec(args.family, args.quantization_mode, args.kv_cache_dtype)])
    except ValueError as e:
        p.error(str(e))
    return args


def child_main(args) -> int:
    """This process is one run (``--child LABEL``): its results go to ``--part``."""
    import step_scenarios
    spec = parse_run(args.child)
    step_scenarios.run(spec.label, spec.family, spec.quantization_mode, spec.kv_cache_dtype, args.tiny,
                       args.ckpt_dir, args.part)
    return 0


def run_in_child(spec: RunSpec, args, work_dir: str, limit_s: float) -> dict:
    """One run in a process of its own, stopped at ``limit_s``; its results with status and seconds."""
    part = os.path.join(work_dir, spec.label.replace(":", "_").replace("+", "_") + ".json")
    log_path = part.removesuffix(".json") + ".log"
    cmd = [sys.executable, os.path.abspath(__file__), "--child", spec.label, "--part", part]
    cmd += (["--tiny"] if args.tiny else []) + (["--ckpt-dir", args.ckpt_dir] if args.ckpt_dir else [])
    start = time.time()
    with open(log_path, "w") as log:  # the engine's log stays out of this report (the device keeps a short tail)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})  # a stopped run's log is whole
        try:
            rc = proc.wait(timeout=limit_s)
            status = "ok" if rc == 0 else f"failed: exit code {rc}"
        except subprocess.TimeoutExpired:
            stop_group(proc)  # its own group: Triton's compile workers go too
            status = f"stopped at its time limit ({limit_s:.0f} s)"
    try:
        with open(part) as f:
            result = json.load(f)
    except (OSError, ValueError):
        result = {"run": spec.label, "scenarios": {}, "errors": {}}
    result.update(status=status, seconds=time.time() - start, limit_s=limit_s, log=log_path)
    if status != "ok":
        with open(log_path) as f:
            result["errors"]["run"] = f"{status}; its output ends:\n{f.read()[-LOG_TAIL:]}"
    return result


def run_all(args, save, emit) -> dict:
    results = {"command": " ".join([sys.executable, *sys.argv]),
               "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
               "tiny": args.tiny, "time_budget_s": args.time_budget_s, "runs": {}}
    work_dir = (os.path.splitext(os.path.abspath(args.out))[0] + ".parts") if args.out else tempfile.mkdtemp()
    os.makedirs(work_dir, exist_ok=True)
    deadline = time.time() + args.time_budget_s
    for i, spec in enumerate(args.specs):
        limit = (deadline - time.time()) / (len(args.specs) - i)  # time a run leaves over goes to the rest
        if limit < MIN_RUN_S[args.tiny]:
            results["runs"][spec.label] = {"run": spec.label, "status": f"skipped: {limit:.0f} s left for it",
                                           "scenarios": {}, "errors": {}}
        else:
            print(f"[profile_steps] {spec.label}: up to {limit:.0f} s", flush=True)
            results["runs"][spec.label] = run_in_child(spec, args, work_dir, limit)
        emit(format_run(results["runs"][spec.label], args.print_top))
        save(results)
    emit(format_summary(results))
    return results


SHORT = {"gemm/linear": "gemm", "attention": "attn", "moe": "moe", "norm": "norm", "rotary+kv_write": "rot+kv",
         "fp8_act_quantize": "fp8q", "sampling/logits": "sample", "elementwise/copy": "elem", "other": "other",
         IDLE: "idle"}


def format_run(run: dict, top: int) -> list[str]:
    lines = [f"\n=== {run['run']}: {run['status']}" + (f" in {run['seconds']:.0f} s" if "seconds" in run else "")
             + (f" (checkpoint {run['checkpoint_s']:.0f} s, start-up {run['startup_s']:.0f} s; engine options "
                f"{json.dumps(run['engine_kwargs'])})" if "startup_s" in run else "")]
    for name, sc in run["scenarios"].items():
        lines += format_scenario(name, sc, top)
    lines += [f"--- {name} FAILED: {error}" for name, error in run["errors"].items()]
    return lines


def format_scenario(name: str, sc: dict, top: int) -> list[str]:
    graph = f"CUDA graph; eager {sc['eager_wall_ms']:.2f} ms" if sc["cuda_graph"] else "no CUDA graph"
    shares = "" if sc["shares_of"] == "wall_ms" else f"; shares of the profiled step's {sc['profiled_wall_ms']:.2f} ms"
    lines = [f"--- {name} ({sc['what']}): {sc['sequences']} sequences, {sc['new_tokens']} new tokens"
             + (f", context mean {sc['mean_context']:.0f} max {sc['max_context']}" if sc["max_context"] else ""),
             f"    wall {sc['wall_ms']:.2f} ms (median of {len(sc['wall_ms_all'])}, {graph}); "
             f"breakdown from {sc['breakdown_from']}{shares}"]
    lines += [f"    {category:<26} {sc['categories_ms'][category]:9.3f} ms {sc['categories_pct'][category]:6.1f}%"
              for category in (*CATEGORIES, IDLE) if sc["categories_ms"][category] > 0 or category == IDLE]
    lines.append("    top kernels (ms, launches, category, name):")
    lines += [f"    {k['ms']:9.3f} {k['calls']:5d}  {k['category']:<17} {k['name'][:100]}"
              for k in sc["top_kernels"][:top]]
    return lines


def format_summary(results: dict) -> list[str]:
    """One line a run and scenario: the wall time and each category's share of it."""
    head = ["run", "scenario", "wall ms", *(SHORT[c] + " %" for c in (*CATEGORIES, IDLE))]
    lines = ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, run in results["runs"].items():
        if not run["scenarios"]:
            lines.append(f"| {label} | {run['status'][:60]} |" + " |" * (len(head) - 2))
        for name, sc in run["scenarios"].items():
            shares = " | ".join(f"{sc['categories_pct'][c]:.1f}" for c in (*CATEGORIES, IDLE))
            lines.append(f"| {label} | {name} | {sc['wall_ms']:.2f} | {shares} |")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    report: list[str] = []

    def emit(lines: list[str]) -> None:
        """Prints and keeps the report (the device returns only the end of a call's output)."""
        print("\n".join(lines), flush=True)
        report.extend(lines)
    results = run_all(args, lambda res: write_json(args.out, res) if args.out else None, emit)
    if args.out:
        text_path = os.path.splitext(args.out)[0] + ".txt"
        with open(text_path, "w") as f:
            f.write("\n".join(report) + "\n")
        print(f"results JSON: {os.path.abspath(args.out)} (this report: {os.path.abspath(text_path)})", flush=True)
    return 0 if all(r["status"] == "ok" and not r["errors"] for r in results["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
