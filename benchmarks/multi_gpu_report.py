"""The multi-GPU benchmark's figures turned into issue 11's answers (`summary` in the JSON) and markdown tables.

Pure arithmetic on the results JSON: parity (tokens agreeing before the first difference, per prompt),
ratios to one GPU against the ideal, start-up times. A figure that is missing reads "–".
"""

from hf_margins import first_difference

FULL_W1 = {False: 256, True: 8}  # W1's request count (tiny: the dry run's); fewer is marked CUT


def _get(res, key, field):
    value = res["figures"].get(key)
    return value.get(field) if isinstance(value, dict) else None


def parity(res, prefix, other="tp2"):
    """Per prompt: tokens compared, tokens agreeing before the first difference, where it is, HF's margin."""
    ref, got = (res["figures"].get(f"{prefix}{s}.parity") for s in ("tp1", other))
    if not (ref and got):
        return None
    margins = (res["figures"].get(f"{prefix}parity_margin") or {}).get("prompts") or []
    rows = []
    for i, (a, b) in enumerate(zip(ref["token_ids"], got["token_ids"])):
        split = first_difference(a, b)
        if split is None and len(a) != len(b):
            split = min(len(a), len(b))
        m = margins[i] if i < len(margins) else {}
        rows.append({"prompt": i, "tokens": len(a), "agree": len(a) if split is None else split,
                     "first_difference": split, "margin_at_difference": m.get("margin_at_difference"),
                     "min_margin_before": m.get("min_margin_before"),
                     "hf_argmax_equal_before": m.get("hf_agrees_with_tp1_before")})
    total = sum(r["tokens"] for r in rows)
    agree = sum(r["agree"] for r in rows)
    return {"rows": rows, "tokens": total, "agree": agree, "equal": agree == total and len(rows) > 0,
            "prompts_equal": sum(r["first_difference"] is None for r in rows)}


def latency(res):
    base = _get(res, "tp1.W2", "ms_per_token")
    out = []
    for n in (1, 2, 4):
        ms = _get(res, f"tp{n}.W2", "ms_per_token")
        if ms is not None:
            out.append({"tensor_parallel": n, "ms_per_token": ms, "ratio_to_tp1": ms / base if base else None,
                        "ideal": 1 / n})
    return out


def _w1(res, key):
    fig, full = res["figures"].get(key), FULL_W1[bool(res["args"].get("tiny"))]
    if not isinstance(fig, dict) or "output_tokens_per_s" not in fig:
        return None
    answered = fig.get("answered", fig.get("requests"))
    return {"tok_s": fig["output_tokens_per_s"], "requests": fig["requests"], "answered": answered,
            "cut": bool(fig.get("cut")) or fig["requests"] < full or answered < fig["requests"]}


def throughput(res, rows, base_key, ideal):
    """[(label, figure key)] against base_key: tok/s, ratio, ideal."""
    base = _w1(res, base_key)
    out = []
    for label, key in rows:
        w = _w1(res, key)
        if w is not None:
            out.append({"what": label, **w, "ratio": w["tok_s"] / base["tok_s"] if base else None,
                        "ideal": ideal.get(key)})
    return out


def startups(res):
    out = {}
    for key, fig in res["figures"].items():
        if key.endswith(".startup") and isinstance(fig, dict) and "startup_s" in fig:
            out[key.rsplit(".", 1)[0]] = fig["startup_s"]
    return out


def environment(res):
    envs = [f for k, f in res["figures"].items() if k.endswith(".environment") and isinstance(f, dict)]
    env = dict(res.get("env", {}))
    if envs:
        env.update({k: envs[0].get(k) for k in ("nccl", "device") if envs[0].get(k)})
    env["commands"] = {k.rsplit(".", 1)[0]: f.get("command") for k, f in res["figures"].items()
                       if k.endswith(".command") and isinstance(f, dict)}
    return env


def summarise(res):
    return {
        "tp_parity": parity(res, ""),
        "tp_latency": latency(res),
        "tp_throughput": throughput(res, [("TP=1, 1 GPU", "tp1.W1"), ("TP=2, 2 GPUs", "tp2.W1")], "tp1.W1",
                                    {"tp2.W1": 2.0}),
        "replicas": throughput(res, [("1 replica (1 GPU)", "serve_r1.W1"), ("2 replicas (2 GPUs)", "serve_r2.W1"),
                                     ("TP=2 × 2 replicas (4 GPUs)", "serve_tp2r2.W1")], "serve_r1.W1",
                               {"serve_r2.W1": 2.0, "serve_tp2r2.W1": 4.0}),
        "mixtral_parity": parity(res, "moe_"),
        "mixtral_throughput": throughput(res, [("Mixtral TP=1, 1 GPU", "moe_tp1.W1"),
                                               ("Mixtral TP=2, 2 GPUs", "moe_tp2.W1")], "moe_tp1.W1",
                                         {"moe_tp2.W1": 2.0}),
        "startup_s": startups(res),
        "environment": environment(res),
    }


def _f(x, digits=2):
    if x is None:
        return "–"
    return f"{x:,.{digits}f}" if isinstance(x, float) else str(x)


def _parity_md(title, p):
    if not p:
        return [f"**{title}**: not run", ""]
    lines = [f"**{title}**: {p['agree']} of {p['tokens']} tokens agree before the first difference; "
             f"{p['prompts_equal']} of {len(p['rows'])} prompts equal throughout", "",
             "| prompt | tokens | agree | first difference | HF top-1 − top-2 there | HF smallest margin before | "
             "HF argmax = TP=1 before |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['prompt']} | {r['tokens']} | {r['agree']} | {_f(r['first_difference'])} | "
              f"{_f(r['margin_at_difference'], 4)} | {_f(r['min_margin_before'], 4)} | "
              f"{_f(r['hf_argmax_equal_before'])} |" for r in p["rows"]]
    return lines + [""]


def _throughput_md(title, rows):
    if not rows:
        return [f"**{title}**: not run", ""]
    lines = [f"**{title}** (W1 output tok/s)", "", "| set-up | tok/s | requests | ratio to the first | ideal |",
             "|---|---|---|---|---|"]
    for r in rows:
        req = f"{r['answered']} of {r['requests']}" + (" CUT" if r["cut"] else "")
        lines.append(f"| {r['what']} | {_f(r['tok_s'], 0)} | {req} | {_f(r['ratio'])}× | "
                     f"{_f(r['ideal'], 1) + '×' if r['ideal'] else '–'} |")
    return lines + [""]


def markdown(res):
    s = summarise(res)
    env = s["environment"]
    lines = ["# Multi-GPU benchmark (issue 11)", "", f"Command: `{res['command']}`", "",
             f"Date: {res['date_utc']}; GPUs: {env.get('gpu') or 'none (CPU dry run)'}; torch {env.get('torch')}, "
             f"NCCL {env.get('nccl', '–')}, transformers {env.get('transformers')}", ""]
    lines += _parity_md("tp_parity: TP=2 against TP=1 (greedy)", s["tp_parity"])
    if s["tp_latency"]:
        lines += ["**tp_latency** (W2, batch 1)", "", "| tensor_parallel | ms/token | ratio to TP=1 | ideal |",
                  "|---|---|---|---|"]
        lines += [f"| {r['tensor_parallel']} | {_f(r['ms_per_token'])} | {_f(r['ratio_to_tp1'])} | {_f(r['ideal'])} |"
                  for r in s["tp_latency"]] + [""]
    else:
        lines += ["**tp_latency**: not run", ""]
    lines += _throughput_md("tp_throughput", s["tp_throughput"])
    lines += _throughput_md("replicas, through the client", s["replicas"])
    lines += _parity_md("mixtral_tp parity: TP=2 against TP=1 on one GPU", s["mixtral_parity"])
    lines += _throughput_md("mixtral_tp", s["mixtral_throughput"])
    lines += ["| start-up (load + warm-up / graph capture) | seconds |", "|---|---|"]
    lines += [f"| {k} | {_f(v, 1)} |" for k, v in s["startup_s"].items()] + [""]
    lines += ["| section | status | seconds | budget |", "|---|---|---|---|"]
    lines += [f"| {k} | {v.get('status')} | {_f(v.get('seconds'), 0)} | {_f(v.get('budget_s'), 0)} |"
              for k, v in res["sections"].items()] + [""]
    lines += [f"- launch `{k}`: `{c}`" for k, c in env["commands"].items()]
    lines += [f"- error `{k}`: {str(v)[:300]}" for k, v in res["errors"].items()]
    lines += [f"- skipped: {', '.join(res['skipped'])}"] if res["skipped"] else []
    return "\n".join(lines) + "\n"
