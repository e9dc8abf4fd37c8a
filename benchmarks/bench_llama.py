"""GPU baseline: mii-core against HF transformers on a random Llama-3-8B-shaped checkpoint, one process, one run.

    python3 benchmarks/bench_llama.py --workloads w1,w2 --out $OUT/bench.json [--w1-requests 256] [--tiny]

Phases run in order of value (ceilings, checkpoint, our engine, then the peers); each prints a line with the
elapsed time, and once --time-budget-s has passed the remaining phases are skipped with a note. Results are
written to --out after every phase, so a run cut short still leaves its numbers. See benchmarks/README.md.
"""

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import traceback

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would crowd the 12,000-character output tail
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checkpoint  # noqa: E402
import hf_peers  # noqa: E402
import workloads as wls  # noqa: E402

SYSTEMS = ("ours", "hf_generate", "hf_cb")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default="w1,w2", help="comma list of w1,w2,w3")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma list of " + ",".join(SYSTEMS))
    p.add_argument("--out", default="bench.json")
    p.add_argument("--w1-requests", type=int, default=256)
    p.add_argument("--peer-w1-requests", type=int, default=None, help="HF peers run W1's first K requests")
    p.add_argument("--w2-repeats", type=int, default=3, help="timings per W2 length; the median counts")
    p.add_argument("--hf-batch", type=int, default=64, help="batch size of the padded static generate peer")
    p.add_argument("--ckpt", default=None, help="checkpoint folder (default /tmp/llama3-8b-random)")
    p.add_argument("--engine-kwargs", default="{}", help="JSON of keyword options for mii_core.pipeline")
    p.add_argument("--time-budget-s", type=float, default=540.0)
    p.add_argument("--tiny", action="store_true", help="tiny float32 model on CPU: smoke test")
    p.add_argument("--skip-ceilings", action="store_true")
    args = p.parse_args(argv)
    args.workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    assert set(args.workloads) <= {"W1", "W2", "W3"}, args.workloads
    assert set(args.systems) <= set(SYSTEMS), args.systems
    args.ckpt = args.ckpt or ("/tmp/llama-tiny-random" if args.tiny else "/tmp/llama3-8b-random")
    return args


class Run:
    """Clock, log lines, time budget and the results file."""

    def __init__(self, args):
        self.args, self.t0 = args, time.perf_counter()
        self.res = {"args": vars(args), "env": env_info(), "figures": {}, "skipped": [], "errors": {}}

    def log(self, msg):
        print(f"[bench {time.perf_counter() - self.t0:7.1f}s] {msg}", flush=True)

    def left(self):
        return self.args.time_budget_s - (time.perf_counter() - self.t0)

    def phase(self, key, fn, *a):
        """Runs one phase unless the budget is spent; a failure is recorded and the run goes on."""
        if self.left() <= 0:
            self.log(f"SKIP {key}: time budget of {self.args.time_budget_s:.0f}s spent")
            self.res["skipped"].append(key)
            return None
        self.log(f"start {key}")
        try:
            out = fn(*a)
        except Exception as e:  # noqa: BLE001 - one broken system must not hide the others' numbers
            traceback.print_exc()
            sys.stdout.flush()
            self.res["errors"][key] = f"{type(e).__name__}: {e}"
            self.log(f"FAILED {key}: {type(e).__name__}: {e}")
            self.save()
            return None
        if isinstance(out, dict):
            self.res["figures"][key] = out
            brief = {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()
                     if not isinstance(v, (list, dict))}
            self.log(f"done {key}: {json.dumps(brief)[:400]}")
        else:
            self.log(f"done {key}")
        self.save()
        return out

    def save(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.args.out)), exist_ok=True)
        with open(self.args.out, "w") as f:
            json.dump(self.res, f, indent=2, default=str)


def env_info():
    import transformers
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        import mii_core
        info["mii_core"] = getattr(mii_core, "__version__", "unknown")
    except Exception as e:  # noqa: BLE001
        info["mii_core"] = f"not importable: {e}"
    return info


def latency(call, prompt, n_new, repeats):
    """ms per output token = (t(n_new) - t(1)) / (n_new - 1), medians of `repeats`; also plain t(n_new)/n_new."""
    # interleaved, so that a drift in clocks or load hits both lengths alike
    pairs = [(call([prompt], 1)[0], call([prompt], n_new)[0]) for _ in range(repeats)]
    t1, tn = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
    return {"ms_per_token": (tn - t1) / (n_new - 1) * 1e3, "ms_per_token_plain": tn / n_new * 1e3,
            "seconds_1_token": t1, "seconds_n_tokens": tn, "new_tokens": n_new,
            "prompt_tokens": len(prompt), "repeats": repeats}


def throughput(call, wl):
    secs, out_tokens, short = call(wl.prompts, wl.max_new_tokens)
    return {"seconds": secs, "requests": len(wl.prompts), "output_tokens": out_tokens,
            "output_tokens_per_s": out_tokens / secs, "prompt_tokens": wl.prompt_tokens,
            "prompt_tokens_per_s": wl.prompt_tokens / secs, "requests_short_of_requested": short}


def run_ours(run, path, work, warm_prompt):
    """Our engine through its token-level entry: pipeline(path).generate_tokens(token_id_lists, ...)."""
    args = run.args

    def load():
        import mii_core
        return mii_core.pipeline(path, **json.loads(args.engine_kwargs))

    t = time.perf_counter()
    pipe = run.phase("ours.load", load)
    if pipe is None:
        return
    run.res["figures"]["ours.load_s"] = time.perf_counter() - t

    def call(prompts, max_new):
        hf_peers.sync()
        t = time.perf_counter()
        res = pipe.generate_tokens(prompts, max_new_tokens=max_new, ignore_eos=True, do_sample=False)
        hf_peers.sync()
        secs = time.perf_counter() - t
        want = max_new if isinstance(max_new, list) else [max_new] * len(prompts)
        assert len(res) == len(prompts), f"{len(res)} results for {len(prompts)} prompts"
        got = [len(r.token_ids) for r in res]
        return secs, sum(min(g, w) for g, w in zip(got, want)), sum(g < w for g, w in zip(got, want))

    try:
        # one short mixed batch (two prompts, then decodes) so first-use compilation stays out of the figures
        run.phase("ours.warmup", lambda: {"seconds": call([warm_prompt, warm_prompt[:8]], [8, 4])[0]})
        if "W2" in work:
            w2 = work["W2"]
            run.phase("ours.W2", latency, call, w2.prompts[0], w2.max_new_tokens[0], args.w2_repeats)
        if "W1" in work:
            run.phase("ours.W1", throughput, call, work["W1"])
        if "W3" in work:
            run.phase("ours.W3", throughput, call, work["W3"])
    finally:
        try:  # never skipped by the budget: the peers need the GPU memory back
            pipe.destroy()
        except Exception as e:  # noqa: BLE001
            run.res["errors"]["ours.destroy"] = f"{type(e).__name__}: {e}"
        del pipe
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            run.log(f"ours freed; cuda memory still allocated {torch.cuda.memory_allocated() / 1e9:.2f} GB")


def run_hf(run, path, work, pad_id, warm_prompt):
    args = run.args
    t = time.perf_counter()
    model = run.phase("hf.load", lambda: hf_peers.load(path, args.tiny))
    if model is None:
        return
    run.res["figures"]["hf.load_s"] = time.perf_counter() - t
    k = args.peer_w1_requests or args.w1_requests
    try:
        run.phase("hf.warmup", lambda: hf_peers.warmup(model, warm_prompt, pad_id))

        def call(prompts, n_new):
            return hf_peers.timed_generate(model, prompts[0], n_new, pad_id), None

        if "hf_generate" in args.systems:
            if "W2" in work:
                w2 = work["W2"]
                run.phase("hf_generate.W2", latency, call, w2.prompts[0], w2.max_new_tokens[0], args.w2_repeats)
            if "W3" in work:
                run.phase("hf_generate.W3", hf_peers.static_batches, model, work["W3"], pad_id, 16)
            if "W1" in work:
                run.phase("hf_generate.W1", hf_peers.static_batches, model, work["W1"].head(k), pad_id,
                          args.hf_batch, run.t0 + args.time_budget_s)
        if "hf_cb" in args.systems and "W1" in work:
            r = run.phase("hf_cb.W1", hf_peers.continuous_batching, model, work["W1"].head(k), pad_id,
                          run.t0 + args.time_budget_s)
            if r is None and "hf_cb.W1" in run.res["errors"] and run.left() > 0:
                reason = run.res["errors"]["hf_cb.W1"]
                r = run.phase("hf_cb.W1.generate_batch", hf_peers.generate_batch, model, work["W1"].head(k),
                              pad_id)
                if r is None:
                    run.res["figures"]["hf_cb.W1"] = {"unavailable": reason}
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def table_rows(res, work):
    fig, fl, ceil = res["figures"], res.get("floors", {}), res["figures"].get("ceilings", {})
    rows = []
    labels = (("ours", "mii-core"), ("hf_generate", "HF generate"), ("hf_cb", "HF continuous batching"))
    for sysname, label in labels:
        for w in ("W1", "W2", "W3"):
            f = fig.get(f"{sysname}.{w}") or fig.get(f"{sysname}.{w}.generate_batch")
            if not f:
                continue
            if "unavailable" in f:
                rows.append((w, label, f["unavailable"][:60], "", None))
            elif w == "W1":
                sub = wls.floors(ceil, res["checkpoint"], work["W1"].head(f["requests"]))
                floor = sub.get("w1_output_tokens_per_s")
                note = f" ({f['requests']} req)" if f["requests"] != len(work["W1"].prompts) else ""
                note += " CUT" if f.get("requests_planned", f["requests"]) != f["requests"] else ""
                rows.append((w, label + note, f"{f['output_tokens_per_s']:.1f}", "output tok/s", floor))
            elif w == "W2":
                rows.append((w, label, f"{f['ms_per_token']:.2f}", "ms/token", fl.get("w2_ms_per_token")))
                rows.append((w, label + " (total/n)", f"{f['ms_per_token_plain']:.2f}", "ms/token",
                             fl.get("w2_ms_per_token")))
            else:
                rows.append((w, label, f"{f['prompt_tokens_per_s']:.0f}", "prompt tok/s",
                             fl.get("w3_prompt_tokens_per_s")))
    c = fig.get("ceilings", {})
    if "bandwidth_Bps" in c:
        rows.append(("ceiling", "d2d copy", f"{c['bandwidth_Bps'] / 1e12:.2f}", "TB/s", None))
        rows.append(("ceiling", "bf16 matmul 8192^3", f"{c['matmul_flops'] / 1e12:.0f}", "TFLOP/s", None))
    return [(w, s, v, u, "" if f is None else (f"{f:.2f}" if f < 100 else f"{f:.0f}")) for w, s, v, u, f in rows]


def print_table(rows):
    head = ("workload", "system", "figure", "unit", "floor")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(5)]
    for r in [head] + rows:
        print("  ".join(str(x).ljust(wd) for x, wd in zip(r, widths)), flush=True)


def main(argv=None):
    args = parse_args(argv)
    run = Run(args)
    run.log(f"env {json.dumps(run.res['env'])}")
    if not args.skip_ceilings:
        run.phase("ceilings", wls.measure_ceilings)
    ck = run.phase("checkpoint", checkpoint.build_checkpoint, args.ckpt, args.tiny, 0, run.log)
    if ck is None:
        return 1
    run.res["checkpoint"] = ck
    first_special = checkpoint.first_special_id(ck["shape"])
    w2 = wls.make_w2(first_special, args.tiny)
    warm_prompt = w2.prompts[0][:16]
    work = {"W1": lambda: wls.make_w1(args.w1_requests, first_special, args.tiny), "W2": lambda: w2,
            "W3": lambda: wls.make_w3(first_special, args.tiny)}
    work = {k: make() for k, make in work.items() if k in args.workloads}
    run.res["workloads"] = {k: {"requests": len(w.prompts), "prompt_tokens": w.prompt_tokens,
                                "output_tokens": w.output_tokens} for k, w in work.items()}
    run.log(f"workloads {json.dumps(run.res['workloads'])}")
    if "ours" in args.systems:
        run_ours(run, args.ckpt, work, warm_prompt)
    if {"hf_generate", "hf_cb"} & set(args.systems):
        run_hf(run, args.ckpt, work, ck["shape"]["eos_token_id"], warm_prompt)
    run.res["floors"] = wls.floors(run.res["figures"].get("ceilings", {}), ck, work.get("W1"), work.get("W3"))
    rows = table_rows(run.res, work)
    run.res["table"] = rows
    run.save()
    run.log(f"finished; results in {args.out}; skipped: {run.res['skipped'] or 'none'}; "
            f"errors: {list(run.res['errors']) or 'none'}")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
