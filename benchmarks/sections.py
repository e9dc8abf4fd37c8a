"""The benchmark's sections. bench_llama.py runs each in a process of its own, so that a section can be
stopped at its time limit and hands all its GPU memory back when it ends:

    python3 benchmarks/sections.py --ctx CTX.json --section NAME --part PART.json

CTX holds the run's options, the checkpoint summary, the run's start and this section's deadline (a
time.time() value); PART receives the section's figures after every phase (phases.Phases).
"""

import argparse
import functools
import gc
import json
import os
import sys
import time
from types import SimpleNamespace

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would crowd the device's 12,000-character tail
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads as wls  # noqa: E402
from families import FAMILIES  # noqa: E402
from phases import Phases, latency, throughput  # noqa: E402

CB_STOP_S = 20  # continuous batching needs this long to stop its thread and leave its context manager


class Ctx:
    def __init__(self, d):
        self.args = SimpleNamespace(**d["args"])
        self.ckpt = d.get("checkpoint")

    def first_special(self, ckpt=None):
        return (ckpt or self.ckpt)["shape"]["bos_token_id"]  # ids from here up are special (checkpoint.py)

    def workload(self, name, ckpt=None):
        return wls.make(name, self.first_special(ckpt), self.args.tiny, self.args.w1_requests)


def _free_device():
    import torch
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def ceilings_section(ph, ctx):
    import ceilings
    ph.phase("ceilings", ceilings.measure_basic, ctx.args.tiny)


def checkpoint_section(ph, ctx):
    import checkpoint

    def build():
        ck = checkpoint.build_checkpoint(ctx.args.ckpt, ctx.args.tiny, 0, ph.log)
        ph.part["info"]["checkpoint"] = ck
        return {"reused": ck["reused"], "build_s": ck.get("build_s", 0.0), "weight_bytes": ck["weight_bytes"]}
    ph.phase("checkpoint", build)


def decode_chain_section(ph, ctx):
    import ceilings
    batches = (1, 4, 8) if ctx.args.tiny else (1, 64, 128, 256)
    ph.phase("ceilings.decode_chain", ceilings.decode_chain, ctx.ckpt["path"], batches, ctx.args.tiny)


def run_ours(ph, prefix, path, engine_kwargs, jobs, warm_prompt):
    """Starts our engine (start-up timed apart), warms it with one short mixed batch, then runs
    jobs = [(figure key, fn(call) -> dict)]; the engine is destroyed whatever happens."""
    import ours
    started = ph.phase(f"{prefix}.load", ours.start, path, engine_kwargs)
    if started is None:
        return
    pipe, startup_s = started
    try:
        ph.record(f"{prefix}.startup", {"startup_s": startup_s, **ours.facts(pipe)})
        call = ours.caller(pipe)
        ph.phase(f"{prefix}.first_call", lambda: {"seconds": call([warm_prompt, warm_prompt[:8]], [8, 4])[0]})
        for key, job, *kwargs in jobs:  # a third item: generate kwargs for this job's requests
            ph.phase(key, job, ours.caller(pipe, **kwargs[0]) if kwargs else call, min_s=5)
    finally:
        pipe.destroy()
        del pipe
        _free_device()


def _ours_jobs(ctx, names, w4_key, prefix="ours"):
    args, jobs = ctx.args, []
    for name in names:
        wl = ctx.workload(name)
        if name == "W2":
            jobs.append((f"{prefix}.W2", lambda call, wl=wl: latency(call, wl.prompts[0], wl.max_new_tokens[0],
                                                                     args.w2_repeats)))
        else:
            jobs.append((w4_key if name == "W4" else f"{prefix}.{name}", lambda call, wl=wl: throughput(call, wl)))
    return jobs


def ours_section(ph, ctx):
    """Our engine with its default options (and --engine-kwargs): W3, W2, W1, then W4."""
    import ours
    available, default, note = ours.prefix_caching_support()
    ph.record("ours.prefix_caching", {"available": available, "default": default, "note": note})
    w4_key = f"ours.W4.{'on' if default else 'off'}" if available else "ours.W4.default"
    names = [w for w in ("W3", "W2", "W1", "W4") if w in ctx.args.workloads]
    jobs = _ours_jobs(ctx, names, w4_key)
    if ctx.args.w1_logprobs and "W1" in names:  # W1 again, every token with its top-N logprobs (issue 19)
        wl = ctx.workload("W1")
        jobs.append(("ours.W1.logprobs", lambda call: throughput(call, wl), {"logprobs": ctx.args.w1_logprobs}))
    run_ours(ph, "ours", ctx.args.ckpt, ours.parse_kwargs(ctx.args.engine_kwargs), jobs,
             ctx.workload("W2").prompts[0][:16])


def ours_quant_section(ph, ctx):
    """Our engine in each --quantization-mode (an engine per mode): W3, W2, W1, figures "ours_<mode>.W<n>"."""
    import ours
    names = [w for w in ("W3", "W2", "W1") if w in ctx.args.workloads]
    for mode in ctx.args.quantization_modes:
        kw = {**ours.parse_kwargs(ctx.args.engine_kwargs), "quantization_mode": mode}
        run_ours(ph, f"ours_{mode}", ctx.args.ckpt, kw, _ours_jobs(ctx, names, None, prefix=f"ours_{mode}"),
                 ctx.workload("W2").prompts[0][:16])


def ours_prefix_alt_section(ph, ctx):
    """W4 again with prefix caching the other way round from the default (a second engine)."""
    import ours
    available, default, note = ours.prefix_caching_support()
    if not available:
        ph.record("ours.W4.alt", {"unavailable": note})
        return
    on = not default
    kw = ours.with_prefix_caching(ours.parse_kwargs(ctx.args.engine_kwargs), on)
    run_ours(ph, "ours_alt", ctx.args.ckpt, kw, _ours_jobs(ctx, ["W4"], f"ours.W4.{'on' if on else 'off'}"),
             ctx.workload("W2").prompts[0][:16])


def ours_fp8kv_section(ph, ctx):
    """W1 again with the KV cache in FP8 (inference_engine_config.kv_cache_dtype, a second engine), then in
    each --quantization-mode with it ("ours_<mode>.W1.fp8kv": issue 18's FP8 weights + FP8 KV figure)."""
    import ours
    w1 = ctx.workload("W1")
    for mode in [None, *ctx.args.quantization_modes]:
        kw = ours.with_kv_cache_dtype(ours.parse_kwargs(ctx.args.engine_kwargs), "fp8")
        if mode is not None:
            kw["quantization_mode"] = mode
        name = "ours" if mode is None else f"ours_{mode}"
        run_ours(ph, f"{name}_fp8kv", ctx.args.ckpt, kw, [(f"{name}.W1.fp8kv", lambda call: throughput(call, w1))],
                 ctx.workload("W2").prompts[0][:16])


def _load_hf(ph, key, path, tiny):
    import hf_peers
    t = time.perf_counter()
    model = ph.phase(key, hf_peers.load, path, tiny)
    if model is not None:
        ph.record(f"{key}_s", time.perf_counter() - t)
    return model


def hf_section(ph, ctx):
    """HF generate (eager W2, padded static W3 and W1) and HF continuous batching (W1), each W1 time-capped."""
    import hf_peers
    args, pad_id = ctx.args, ctx.ckpt["shape"]["eos_token_id"]
    model = _load_hf(ph, "hf.load", args.ckpt, args.tiny)
    if model is None:
        return
    w1 = ctx.workload("W1").head(args.peer_w1_requests) if "W1" in args.workloads else None
    ph.phase("hf.first_call", lambda: {"seconds": hf_peers.timed_generate(model, ctx.workload("W2").prompts[0],
                                                                        4, pad_id)})
    if "hf_generate" in args.systems:
        if "W2" in args.workloads:
            wl = ctx.workload("W2")
            ph.phase("hf_generate.W2", latency, lambda p, n: (hf_peers.timed_generate(model, p[0], n, pad_id),),
                     wl.prompts[0], wl.max_new_tokens[0], args.w2_repeats)
        if "W3" in args.workloads:
            ph.phase("hf_generate.W3", hf_peers.static_batches, model, ctx.workload("W3"), pad_id, 16)
        if w1 is not None:  # half of what is left, the rest for continuous batching
            share = (ph.left() - CB_STOP_S) / 2 if "hf_cb" in args.systems else ph.left()
            ph.phase("hf_generate.W1", hf_peers.static_batches, model, w1, pad_id, args.hf_batch,
                     time.time() + share, min_s=10)
    if "hf_cb" in args.systems and w1 is not None:
        r = ph.phase("hf_cb.W1", hf_peers.continuous_batching, model, w1, pad_id, ph.deadline - CB_STOP_S,
                     args.tiny, min_s=CB_STOP_S + 10)
        if r is None and "hf_cb.W1" in ph.part["errors"]:
            reason = ph.part["errors"]["hf_cb.W1"]
            if ph.phase("hf_cb.W1.generate_batch", hf_peers.generate_batch, model, w1, pad_id, min_s=30) is None:
                ph.record("hf_cb.W1", {"unavailable": reason})


def hf_static_section(ph, ctx):
    """W2 through HF generate with a static cache, which transformers compiles on CUDA; compile time apart."""
    import hf_peers
    args, pad_id = ctx.args, ctx.ckpt["shape"]["eos_token_id"]
    model = _load_hf(ph, "hf_static.load", args.ckpt, args.tiny)
    if model is None:
        return
    wl = ctx.workload("W2")
    prompt, n = wl.prompts[0], wl.max_new_tokens[0]
    calls = {}

    def compile_call():  # recorded on its own, so a section stopped while measuring still reports it
        calls["n"], first_s = hf_peers.static_cache_caller(model, prompt, n, pad_id)
        return {"first_call_s": first_s, "auto_compiled": model.device.type == "cuda"}
    first = ph.phase("hf_static.first_call", compile_call)
    if first is None:
        return

    def measure():
        lat = latency(lambda p, k: (calls["n"](k),), prompt, n, args.w2_repeats)
        return {**lat, **first, "compile_s": first["first_call_s"] - lat["seconds_n_tokens"],
                "method": "generate(past_key_values=StaticCache(max_cache_len=prompt+new)), reset per call"}
    ph.phase("hf_static.W2", measure)


def _has_architecture(model_type):
    """(installed, note): whether a mii-core plugin serves `model_type` (asked of the plugin registry)."""
    try:
        from mii_core.plugins import get_plugins
        archs = get_plugins().architectures
        names = archs.names() if hasattr(archs, "names") else sorted(archs.entries)
    except Exception as e:  # noqa: BLE001
        return False, f"not available: cannot list plugins ({type(e).__name__}: {e})"
    if model_type in names:
        return True, "installed"
    return False, f"not available: no plugin for model_type '{model_type}' (installed: {', '.join(names) or 'none'})"


def mixtral_section(ph, ctx):
    """W1 on a Mixtral-shaped model (4 layers of Mixtral-8x7B) with our engine and HF generate (padded static
    batches, time-capped) as its peer; only when a plugin serves 'mixtral' (or with --moe-peer-alone)."""
    import checkpoint
    args = ctx.args
    installed, note = _has_architecture("mixtral")
    if "ours" in args.systems:
        ph.record("ours.moe_plugin", {"installed": installed, "note": note})
        if not installed:
            ph.record("ours.moe_W1", {"unavailable": note})
            if not args.moe_peer_alone:
                ph.log(f"Mixtral-shaped W1 {note}; skipped (--moe-peer-alone runs the HF peer anyway)")
                return

    def build():
        ck = checkpoint.build_mixtral(args.moe_ckpt, args.tiny, 0, ph.log)
        ph.part["info"]["moe_checkpoint"] = ck
        return {"reused": ck["reused"], "build_s": ck.get("build_s", 0.0)}
    if ph.phase("moe.checkpoint", build) is None:
        return
    ck = ph.part["info"]["moe_checkpoint"]
    ours_runs = [("ours_moe", {}, "ours.moe_W1")] if installed else []
    ours_runs += [(f"ours_moe_{m}", {"quantization_mode": m}, f"ours_{m}.moe_W1")  # each mode beside bf16
                  for m in (getattr(args, "quantization_modes", []) if installed else [])]
    _w1_beside_hf_generate(ph, ctx, ck, ours_runs, "hf_moe.load", "hf_generate.moe_W1")


def _w1_beside_hf_generate(ph, ctx, ck, ours_runs, hf_load_key, hf_key):
    """W1 on checkpoint `ck` through our engine, one engine per (prefix, extra engine kwargs, figure key) of
    `ours_runs` (when "ours" is among the systems), then through HF generate on W1's first
    --peer-w1-requests requests (padded static batches, capped by the section's deadline, of which our
    runs leave it a third)."""
    args = ctx.args
    wl = ctx.workload("W1", ck)
    if "ours" in args.systems and ours_runs:
        import ours
        hf_reserve = ph.left() / 3 if "hf_generate" in args.systems else 0
        ph.deadline -= hf_reserve  # our run must leave the peer its share
        for prefix, extra, key in ours_runs:
            run_ours(ph, prefix, ck["path"], {**ours.parse_kwargs(args.engine_kwargs), **extra},
                     [(key, lambda call: throughput(call, wl))], wl.prompts[0][:16])
        ph.deadline += hf_reserve
    if "hf_generate" in args.systems:
        import hf_peers
        model = _load_hf(ph, hf_load_key, ck["path"], args.tiny)
        if model is not None:
            ph.phase(hf_key, hf_peers.static_batches, model, wl.head(args.peer_w1_requests),
                     ck["shape"]["eos_token_id"], args.hf_batch, ph.deadline, min_s=10)


def family_section(ph, ctx, family):
    """Issue 17's row for a families.Family: its random checkpoint (built in /tmp, reused while its marker
    matches), W1 through our engine (when a plugin serves its model_type; else the row says why) and
    through HF generate, beside each other."""
    import checkpoint
    args = ctx.args
    installed, note = _has_architecture(family.model_type)
    if "ours" in args.systems and not installed:
        ph.record(family.figure("ours"), {"unavailable": note})

    others = [f.path(args.tiny) for f in FAMILIES.values() if f is not family]
    removable = [args.moe_ckpt, *others, args.ckpt]  # if the disk lacks room; the Llama one costs most to redo

    def build():
        ck = checkpoint.build_family(family, family.path(args.tiny), args.tiny, 0, ph.log, removable)
        ph.part["info"].setdefault("family_checkpoints", {})[family.name] = ck
        return {"reused": ck["reused"], "build_s": ck.get("build_s", 0.0)}
    if ph.phase(f"{family.name}.checkpoint", build) is None:
        return
    ck = ph.part["info"]["family_checkpoints"][family.name]
    ours_runs = [(f"ours_{family.name}", {}, family.figure("ours"))] if installed else []
    _w1_beside_hf_generate(ph, ctx, ck, ours_runs, f"hf_{family.name}.load", family.figure("hf_generate"))


SECTIONS = {
    "ceilings": ceilings_section,
    "checkpoint": checkpoint_section,
    "decode_chain": decode_chain_section,
    "ours": ours_section,
    "ours_quant": ours_quant_section,
    "ours_prefix_alt": ours_prefix_alt_section,
    "ours_fp8kv": ours_fp8kv_section,
    "hf": hf_section,
    "hf_static": hf_static_section,
    "mixtral": mixtral_section,
    **{name: functools.partial(family_section, family=f) for name, f in FAMILIES.items()},
}


def run(name, ctx_dict, part_path):
    """Runs one section here; its part of the results is in part_path afterwards (and after every phase)."""
    ctx = Ctx(ctx_dict)
    if ctx.args.stub_engine:
        import stub_engine
        stub_engine.install()
    ph = Phases(part_path, ctx_dict["t0"], ctx_dict["deadline"])
    ph.save()
    SECTIONS[name](ph, ctx)
    return ph.part


def main(argv=None, doc=__doc__, names=None, run_section=None):
    """`--ctx CTX --section NAME --part PART`: runs one section (also multi_gpu_sections.py's command line)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ctx", required=True)
    p.add_argument("--section", required=True, choices=sorted(names or SECTIONS))
    p.add_argument("--part", required=True)
    a = p.parse_args(argv)
    with open(a.ctx) as f:
        (run_section or run)(a.section, json.load(f), a.part)
    return 0


if __name__ == "__main__":
    sys.exit(main())
