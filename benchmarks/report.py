"""From the run's figures to what is reported: each workload's floors (floors.py on the ceilings measured in
the run), one row per workload with mii-core, the peers, the floor and the ratios, and the issue's targets.
Pure Python: the runner holds no torch, and the report can be rebuilt from a results JSON on any machine."""

import dataclasses

import families
import floors
import report_quant
import workloads as wls

PEERS = (("hf_generate", "HF generate"), ("hf_cb", "HF continuous batching"), ("hf_static", "HF static cache + compile"))


def dtype_bytes(dtype):
    return 4 if "float32" in dtype else 2


def read_rate(res):
    """(bytes/s, source) for the memory bounds: the fastest the device was seen to move bytes through its
    memory in this run (the sum reduction, the copy counting read + write, or the decode chain at batch 1),
    so that a floor is never above what this device showed it can do."""
    fig = res["figures"]
    ceil = fig.get("ceilings", {})
    rates = {"sum reduction": ceil.get("read_Bps"), "copy, read + write": ceil.get("copy_Bps")}
    b1 = fig.get("ceilings.decode_chain", {}).get("batches", {}).get("1")
    rates["decode chain, batch 1"] = b1 and b1["read_Bps"]
    rates = {k: v for k, v in rates.items() if v}
    if not rates:
        return None, None
    best = max(rates, key=rates.get)
    return rates[best], best


def workload_floors(res):
    """floors.workload_floor for every workload the run had, on the run's ceilings."""
    ceil = res["figures"].get("ceilings", {})
    bw, source = read_rate(res)
    if not bw or not ceil.get("matmul_flops"):
        return {}
    args, out = res["args"], {"read_Bps": bw, "read_source": source, "matmul_flops": ceil["matmul_flops"]}
    models = {"llama": res.get("checkpoint"), "moe": res.get("moe_checkpoint"), **res.get("family_checkpoints", {})}
    jobs = [(w, "llama", w) for w in ("W1", "W2", "W3", "W4") if w in args["workloads"]] + [("MOE_W1", "moe", "W1")]
    jobs += [(f.floor_key, f.name, "W1") for f in families.FAMILIES.values()]
    geometries, lengths = {}, {}  # for the quantization modes' floors
    if args.get("kv_cache_dtype") == "fp8" and "W1" in args["workloads"]:
        jobs.append(("W1_FP8KV", "llama", "W1"))
    for key, model, name in jobs:
        ck = models.get(model)
        if not ck:
            continue
        geo = floors.Geometry.from_config(ck.get("config") or ck["shape"], dtype_bytes(ck["dtype"]))
        if key.endswith("_FP8KV"):  # one byte per cached K/V element: the KV part of the floor halves
            geo = dataclasses.replace(geo, kv_dtype_bytes=1)
        wl = wls.make(name, ck["shape"]["bos_token_id"], args["tiny"], args["w1_requests"])
        out[key] = floors.workload_floor(geo, [len(p) for p in wl.prompts], wl.max_new_tokens, ceil["matmul_flops"],
                                         bw, wl.shared_prefix_len)
        out[key]["streamed_weight_bytes"] = geo.streamed_weight_bytes
        geometries[key] = geo
        lengths[key] = ([len(p) for p in wl.prompts], wl.max_new_tokens, wl.shared_prefix_len)
    out.update(report_quant.mode_floors({**res, "floors": out}, geometries, lengths))
    return out


def _fig(res, key):
    f = res["figures"].get(key)
    return f if isinstance(f, dict) else None


def _note(f, planned):
    """' (64 of 256 req, CUT)' when a peer ran part of the workload or was cut by its time cap."""
    if not f or "unavailable" in f:
        return ""
    bits = []
    if f.get("requests", planned) != planned:
        bits.append(f"{f['requests']} of {planned} req")
    if f.get("cut_by_time_budget"):
        bits.append("CUT")
    return f" ({', '.join(bits)})" if bits else ""


def _row(workload, metric, higher_is_better, values, floor_value=None, bound=None, notes=None):
    """values: {system: number or None or 'unavailable: ...'}; ratios: mii-core against the floor (how many
    times the floor's time it takes) and against each peer (how many times faster)."""
    ours = values.get("ours")
    row = {"workload": workload, "metric": metric, "higher_is_better": higher_is_better, "values": values,
           "notes": notes or {}, "floor": floor_value, "bound": bound, "x_floor": None, "speedup_vs": {}}
    if isinstance(ours, (int, float)) and ours > 0:
        if floor_value:
            row["x_floor"] = floor_value / ours if higher_is_better else ours / floor_value
        for sys_name, v in values.items():
            if sys_name != "ours" and isinstance(v, (int, float)) and v > 0:
                row["speedup_vs"][sys_name] = ours / v if higher_is_better else v / ours
    return row


def _value(f, field):
    if f is None:
        return None
    return f["unavailable"] if "unavailable" in f else f.get(field)


def rows(res):
    fl, args = res.get("floors", {}), res["args"]
    n1 = args["w1_requests"]
    out = []

    def add(workload, metric, hib, field, keys, floor_value=None, bound=None, planned=None):
        figs = {s: _fig(res, k) for s, k in keys.items()}
        out.append(_row(workload, metric, hib, {s: _value(f, field) for s, f in figs.items()}, floor_value, bound,
                        {s: _note(f, planned) for s, f in figs.items() if planned}))

    w = fl.get("W1", {})
    add("W1", "output tok/s", True, "output_tokens_per_s",
        {"ours": "ours.W1", "hf_generate": "hf_generate.W1", "hf_cb": "hf_cb.W1"},
        w.get("output_tokens_per_s"), w.get("bound"), n1)
    w = fl.get("W1_FP8KV", {})
    add("W1, FP8 KV cache", "output tok/s", True, "output_tokens_per_s", {"ours": "ours.W1.fp8kv"},
        w.get("output_tokens_per_s"), w.get("bound"), n1)
    w = fl.get("W2", {})
    f2 = w.get("decode_step_s")
    add("W2", "ms/token", False, "ms_per_token",
        {"ours": "ours.W2", "hf_generate": "hf_generate.W2", "hf_static": "hf_static.W2"},
        f2 and f2 * 1e3, w.get("bound"))
    w = fl.get("W3", {})
    add("W3", "prompt tok/s", True, "prompt_tokens_per_s", {"ours": "ours.W3", "hf_generate": "hf_generate.W3"},
        w.get("prompt_tokens_per_s"), w.get("bound"))
    w = fl.get("W4", {})
    for state in ("on", "off", "default"):
        if _fig(res, f"ours.W4.{state}"):
            add("W4", f"seconds, prefix cache {state}", False, "seconds", {"ours": f"ours.W4.{state}"},
                w.get("floor_s"), w.get("bound"))
    w = fl.get("MOE_W1", {})
    add("Mixtral-shaped W1", "output tok/s", True, "output_tokens_per_s",
        {"ours": "ours.moe_W1", "hf_generate": "hf_generate.moe_W1"}, w.get("output_tokens_per_s"), w.get("bound"),
        n1)
    for f in families.FAMILIES.values():  # issue 17's rows
        w = fl.get(f.floor_key, {})
        add(f.label, "output tok/s", True, "output_tokens_per_s",
            {"ours": f.figure("ours"), "hf_generate": f.figure("hf_generate")}, w.get("output_tokens_per_s"),
            w.get("bound"), n1)
        out[-1]["floor_key"] = f.floor_key
        out[-1]["x_memory_floor"] = _x_memory_floor(out[-1], w)
    out += report_quant.rows(res, _row, lambda key, field: _value(_fig(res, key), field))
    return [r for r in out if any(v is not None for v in r["values"].values())]


def _x_memory_floor(row, floor):
    """mii-core's time over the memory bound's: issue 17 holds the family rows against the memory floor
    (the row's own floor is the larger bound; both are memory-bound at W1's shapes)."""
    ours = row["values"].get("ours")
    if not floor or not floor.get("memory_s") or not isinstance(ours, (int, float)) or ours <= 0:
        return None
    output_tokens = floor["output_tokens_per_s"] * floor["floor_s"]
    return output_tokens / floor["memory_s"] / ours


def startup(res):
    """Start-up figures, apart from the workloads: ours (load + warm-up/capture, then the first call), HF."""
    fig = res["figures"]
    pick = {"mii-core start-up (load + capture)": ("ours.startup", "startup_s"),
            "mii-core first call": ("ours.first_call", "seconds"),
            "mii-core start-up, Mixtral shape": ("ours_moe.startup", "startup_s"),
            "HF load": ("hf.load_s", None), "HF static cache: first call (compiles)": ("hf_static.first_call", "first_call_s"),
            "HF static cache: compile (first call - steady call)": ("hf_static.W2", "compile_s")}
    for f in families.FAMILIES.values():
        pick[f"mii-core start-up, {f.label.removesuffix(' W1')}"] = (f"ours_{f.name}.startup", "startup_s")
    out = {}
    for label, (key, field) in pick.items():
        v = fig.get(key)
        v = v.get(field) if isinstance(v, dict) and field else v
        if isinstance(v, (int, float)):
            out[label] = v
    return out


def targets(res):
    """The issue's targets, each with the run's value and whether it is met (None: not measured)."""
    fl = res.get("floors", {})
    by = {(r["workload"], r["metric"]): r for r in res.get("table", [])}
    w1, w2, w3 = by.get(("W1", "output tok/s")), by.get(("W2", "ms/token")), by.get(("W3", "prompt tok/s"))
    moe = by.get(("Mixtral-shaped W1", "output tok/s"))

    def ours(r):
        v = r and r["values"].get("ours")
        return v if isinstance(v, (int, float)) else None

    def vs(r, peer):
        return r and r["speedup_vs"].get(peer)

    w3_s = _value(_fig(res, "ours.W3"), "seconds")
    w3_rate = fl["W3"]["flops"] / w3_s / fl["matmul_flops"] if isinstance(w3_s, float) and fl.get("W3") else None
    on, off = _value(_fig(res, "ours.W4.on"), "seconds"), _value(_fig(res, "ours.W4.off"), "seconds")
    w4 = off / on if isinstance(on, float) and isinstance(off, float) else None
    items = [
        ("W1 >= 6,000 output tok/s", ours(w1), ours(w1) and ours(w1) >= 6000),
        ("W1 within 2x of the floor", w1 and w1["x_floor"], w1 and w1["x_floor"] and w1["x_floor"] <= 2),
        ("W1 >= 25x HF generate", vs(w1, "hf_generate"), vs(w1, "hf_generate") and vs(w1, "hf_generate") >= 25),
        ("W2 <= 6.0 ms/token", ours(w2), ours(w2) and ours(w2) <= 6.0),
        ("W2 faster than HF static cache + compile", vs(w2, "hf_static"), vs(w2, "hf_static") and vs(w2, "hf_static") > 1),
        ("W3 >= 75% of the measured matmul rate", w3_rate, w3_rate and w3_rate >= 0.75),
        ("W3 above HF generate", vs(w3, "hf_generate"), vs(w3, "hf_generate") and vs(w3, "hf_generate") > 1),
        ("W4: prefix cache on >= 4x faster than off", w4, w4 and w4 >= 4),
        ("Mixtral-shaped W1 >= 10x HF generate", vs(moe, "hf_generate"), vs(moe, "hf_generate") and vs(moe, "hf_generate") >= 10),
    ]
    items += [item for f in families.FAMILIES.values() for item in _family_targets(by.get((f.label, "output tok/s")),
                                                                                      f.label)]
    return [{"target": t, "value": v, "met": None if v is None else bool(m)} for t, v, m in items] \
        + report_quant.targets(res)


def _family_targets(row, label):
    """Issue 17's targets for a family row: >= 20x HF generate, within 2x of the memory floor."""
    speedup = row and row["speedup_vs"].get("hf_generate")
    x_memory = row and row.get("x_memory_floor")
    return [(f"{label} >= 20x HF generate", speedup, speedup and speedup >= 20),
            (f"{label} within 2x of its memory floor", x_memory, x_memory and x_memory <= 2)]


def complete(res):
    """Adds floors, table, start-up and targets to a results dict (in place)."""
    res["floors"] = workload_floors(res)
    res["table"] = rows(res)
    res["startup"] = startup(res)
    res["targets"] = targets(res)
    return res


def fmt(v):
    if v is None:
        return "–"
    if isinstance(v, str):  # "not available: ...": the reason is in the notes under the table
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    a = abs(v)
    return f"{v:,.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 0.1 else f"{v:.3g}"


def markdown(res):
    from report_md import render
    return render(res, PEERS, fmt)
