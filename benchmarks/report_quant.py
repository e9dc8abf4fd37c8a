"""The quantization modes' part of the report (``--quantization-mode``): each mode's floors (its weights'
bytes, floors.MODE_WEIGHT_BYTES), one row per workload and mode beside bf16 (mii-core in the mode, its
speed-up over mii-core bf16 of the same run), and issue 18's targets. Pure Python, like report.py."""

import floors

# (workload label, metric, higher is better, figure field, floor key, figure suffix)
WORKLOADS = (("W1", "output tok/s", True, "output_tokens_per_s", "W1", "W1"),
             ("W2", "ms/token", False, "ms_per_token", "W2", "W2"),
             ("W3", "prompt tok/s", True, "prompt_tokens_per_s", "W3", "W3"),
             # the mode's weights with the FP8 KV cache (ours_fp8kv section), beside bf16 weights with it
             ("W1, FP8 KV cache", "output tok/s", True, "output_tokens_per_s", "W1_FP8KV", "W1.fp8kv"),
             ("Mixtral-shaped W1", "output tok/s", True, "output_tokens_per_s", "MOE_W1", "moe_W1"))


def modes(res):
    return res["args"].get("quantization_modes") or []


def mode_floors(res, geometries, jobs):
    """{f"{key}@{mode}": floor} for every workload key and mode; ``geometries[key]`` its bf16 Geometry and
    ``jobs[key]`` (prompt lengths, output lengths, shared prefix)."""
    fl, out = res.get("floors", {}), {}
    for mode in modes(res):
        flops = fl["matmul_flops"] * floors.MODE_FLOPS_FACTOR.get(mode, 1.0)
        for key, geo in geometries.items():
            prompts, outputs, prefix = jobs[key]
            out[f"{key}@{mode}"] = floors.workload_floor(geo.quantized(mode), prompts, outputs, flops, fl["read_Bps"],
                                                         prefix)
    return out


def rows(res, make_row, value_of):
    """One row per mode and workload: mii-core in the mode against its floor and against mii-core bf16."""
    fl, out = res.get("floors", {}), []
    for mode in modes(res):
        for label, metric, hib, field, floor_key, suffix in WORKLOADS:
            w = fl.get(f"{floor_key}@{mode}", {})
            floor_value = w.get("decode_step_s") and w["decode_step_s"] * 1e3 if metric == "ms/token" else w.get(field)
            values = {"ours": value_of(f"ours_{mode}.{suffix}", field), "ours_bf16": value_of(f"ours.{suffix}", field)}
            if values["ours"] is None:
                continue
            row = make_row(f"{label} {mode}", metric, hib, values, floor_value, w.get("bound"))
            row["floor_key"] = f"{floor_key}@{mode}"
            out.append(row)
    return out


def targets(res):
    """Issue 18's targets: each mode's figures against mii-core bf16 of the same run."""
    by = {(r["workload"], r["metric"]): r for r in res.get("table", [])}

    def ours(label, metric="ms/token"):
        r = by.get((label, metric))
        v = r and r["values"].get("ours")
        return v if isinstance(v, (int, float)) else None

    def over_bf16(label, metric):
        r = by.get((label, metric))
        return r and r["speedup_vs"].get("ours_bf16")

    items = []
    for mode in ("fp8", "wf8af16"):
        if mode in modes(res):
            v = ours(f"W2 {mode}")
            items.append((f"W2 {mode} <= 2.6 ms/token", v, v is not None and v <= 2.6))
    if "fp8" in modes(res):
        v = over_bf16("W3 fp8", "prompt tok/s")
        items.append(("W3 fp8 >= 1.5x bf16", v, v is not None and v >= 1.5))
        with_kv, bf16 = ours("W1, FP8 KV cache fp8", "output tok/s"), by.get(("W1 fp8", "output tok/s"))
        bf16 = bf16 and bf16["values"].get("ours_bf16")  # bf16 weights, bf16 KV cache
        v = with_kv / bf16 if with_kv and isinstance(bf16, (int, float)) and bf16 else None
        items.append(("W1 fp8 + FP8 KV cache >= 1.6x bf16", v, v is not None and v >= 1.6))
        v = over_bf16("Mixtral-shaped W1 fp8", "output tok/s")
        items.append(("Mixtral-shaped W1 fp8 >= 1.4x bf16", v, v is not None and v >= 1.4))
    if "wf6af16" in modes(res):
        v = over_bf16("W2 wf6af16", "ms/token")
        items.append(("W2 wf6af16 <= 0.8x bf16's time", v and 1 / v, v is not None and 1 / v <= 0.8))
    return [{"target": t, "value": v, "met": None if v is None else bool(m)} for t, v, m in items]
