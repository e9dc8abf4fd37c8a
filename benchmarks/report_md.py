"""The markdown the runner prints at the end (and writes beside the JSON), ready to paste into RESULTS.md."""


def _table(head, body):
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in body]


def _main_table(res, peers, fmt):
    fl = res.get("floors", {})
    head = ["workload", "metric", "mii-core"] + [label for _, label in peers] + \
        ["floor (bound)", "compute / memory bound", "mii-core time ÷ floor time", "mii-core vs peers"]
    body = []
    keys = {"W1": "W1", "W1, FP8 KV cache": "W1_FP8KV", "W2": "W2", "W3": "W3", "Mixtral-shaped W1": "MOE_W1"}
    for r in res.get("table", []):
        f = fl.get(r.get("floor_key") or keys.get(r["workload"], r["workload"]), {})
        cells = [r["workload"], r["metric"], fmt(r["values"].get("ours"))]
        for sys_name, _ in peers:
            v = r["values"].get(sys_name)
            cells.append(fmt(v) + r["notes"].get(sys_name, "") if v is not None else "–")
        cells.append(f"{fmt(r['floor'])} ({r['bound']})" if r["floor"] else "–")
        cells.append(_bounds(r, f, fmt))
        cells.append(f"{r['x_floor']:.2f}×" if r["x_floor"] else "–")
        labels = {**dict(peers), "ours_bf16": "mii-core bf16"}  # a quantization mode's row: against bf16
        cells.append(", ".join(f"{v:.1f}× {labels[s]}" if v >= 1 else f"{v:.2f}× {labels[s]}"
                               for s, v in r["speedup_vs"].items()) or "–")
        body.append(cells)
    return _table(head, body)


def _bounds(row, f, fmt):
    """Both bounds in the row's unit."""
    if not f:
        return "–"
    if row["metric"] == "ms/token" and "decode_step_compute_s" in f:
        return f"{fmt(f['decode_step_compute_s'] * 1e3)} / {fmt(f['decode_step_memory_s'] * 1e3)}"
    if row["metric"].startswith("seconds"):
        return f"{fmt(f['compute_s'])} / {fmt(f['memory_s'])}"
    field = "prompt_tokens_per_s" if row["metric"] == "prompt tok/s" else "output_tokens_per_s"
    per_s = f[field] * f["floor_s"]  # tokens
    return f"{fmt(per_s / f['compute_s'])} / {fmt(per_s / f['memory_s'])}"


def _ceilings(res, fmt):
    c = res["figures"].get("ceilings", {})
    ch = res["figures"].get("ceilings.decode_chain", {})
    body = []
    if c.get("copy_Bps"):
        body += [("copy (read + write)", f"{c['copy_Bps'] / 1e12:.2f} TB/s"),
                 ("read (sum reduction)", f"{c['read_Bps'] / 1e12:.2f} TB/s"),
                 (f"matmul {c['matmul_shape'][0]}³ {c['matmul_dtype'].removeprefix('torch.')}",
                  f"{c['matmul_flops'] / 1e12:.0f} TFLOP/s")]
    for b, v in ch.get("batches", {}).items():
        body.append((f"decode step, projections only ({ch['weight_bytes'] / 1e9:.2f} GB, {v['mode']}), batch {b}",
                     f"{fmt(v['ms'])} ms ({v['read_Bps'] / 1e12:.2f} TB/s)"))
    if ch.get("eager_batch1_ms"):
        body.append(("same, launched eagerly, batch 1", f"{fmt(ch['eager_batch1_ms'])} ms"))
    fl = res.get("floors", {})
    if fl.get("read_Bps"):
        body.append(("read rate the floors use", f"{fl['read_Bps'] / 1e12:.2f} TB/s ({fl['read_source']})"))
    return _table(["ceiling", "measured"], body) if body else ["(no ceilings measured)"]


def _floors(res, fmt):
    body = []
    for key, f in res.get("floors", {}).items():
        if isinstance(f, dict):
            body.append((key, f["steps"], f"{f['flops'] / 1e12:,.1f}", f"{f['weight_bytes_read'] / 1e12:.2f}",
                         f"{f['kv_bytes_read'] / 1e12:.2f}", f"{f['kv_bytes_peak'] / 1e9:.1f}", fmt(f["compute_s"]),
                         fmt(f["memory_s"]), f"{fmt(f['floor_s'])} ({f['bound']})"))
    head = ["workload", "steps", "TFLOP", "weights read TB", "KV read TB", "KV peak GB", "compute s", "memory s",
            "floor s"]
    return _table(head, body) if body else ["(no floors: ceilings missing)"]


def _variants_made(res):
    """The phases other than loading that made Triton kernel variants ready (benchmarks/kernel_variants.py):
    a timed workload among them paid for compiling inside its time."""
    made = {phase: seen for phase, seen in res.get("kernel_variants_made", {}).items()
            if seen.get("count") and not phase.endswith(".load")}
    if not made:
        return []
    return ["Triton kernel variants made ready by a phase after loading (compiled or read from the disk cache "
            "inside its time):"] + [f"- `{phase}`: {seen['count']} ({', '.join(seen['kernels'])})"
                                   for phase, seen in made.items()] + [""]


def render(res, peers, fmt):
    env = res["env"]
    out = [f"### Run of {res['date_utc'][:16]} UTC", "",
           f"GPU: {env.get('gpu') or res['figures'].get('ceilings', {}).get('device') or 'none'}; torch "
           f"{env.get('torch')}, transformers {env.get('transformers')}, triton {env.get('triton')}, "
           f"mii-core {env.get('mii-core')}", "", f"Command: `{res['command']}`", ""]
    out += _main_table(res, peers, fmt) + [""]
    out += _table(["start-up", "seconds"], [(k, fmt(v)) for k, v in res.get("startup", {}).items()]) + [""]
    out += _ceilings(res, fmt) + [""]
    out += _floors(res, fmt) + [""]
    out += _table(["target (issue 8)", "this run", "met"],
                  [(t["target"], fmt(t["value"]), {True: "yes", False: "**no**", None: "not measured"}[t["met"]])
                   for t in res.get("targets", [])]) + [""]
    out += _table(["section", "status", "seconds", "budget s"],
                  [(n, s["status"], fmt(s.get("seconds")), fmt(s.get("budget_s")))
                   for n, s in res.get("sections", {}).items()]) + [""]
    out += _variants_made(res)
    if res.get("errors"):
        out += ["Errors:"] + [f"- `{k}`: {v[:300]}" for k, v in res["errors"].items()] + [""]
    notes = [f"{k}: {v.get('note') or v.get('unavailable')}" for k, v in res["figures"].items()
             if isinstance(v, dict) and (v.get("unavailable") or "note" in v)]
    if notes:
        out += ["Notes:"] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)
