"""W5's tables (markdown) and plot (PNG) from the results: one row per (system, front end, workload, rate)."""

from w5.stats import SLAS, highest_compliant_rate


def ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.0f}"


def sweep_rows(results):
    """[(key, summaries sorted by rate)] for every measured series: key = 'system/front end/workload'."""
    series = {}
    for run in results.get("runs", []):
        if "summary" in run:
            series.setdefault(f"{run['system']}/{run['frontend']}/{run['workload']}", []).append(run["summary"])
    return [(key, sorted(rows, key=lambda s: s["offered_rate"])) for key, rows in series.items()]


def busy(share):
    """A client process's CPU share of the run ("-" where not measured)."""
    return "-" if share is None else f"{share:.2f}"


def server_busy(summary, role):
    """One of our processes' CPU seconds per second of the run (threads add up: above 1 is possible), or None."""
    used, span = summary.get("server_cpu_s", {}).get(role), summary.get("span_s")
    return used / span if used is not None and span else None


def sweep_table(results):
    head = ("| series | rate | sent | failed | req/s | out tok/s | TTFT p50/p90/p99 ms | TPOT p50/p90/p99 ms | "
            + " | ".join(f"{sla.name} met / eff. req/s" for sla in SLAS) + " | client busy | router busy |")
    lines = [head, "|" + " --- |" * (10 + len(SLAS))]
    for key, rows in sweep_rows(results):
        for s in rows:
            ttft = "/".join(ms(s["ttft_s"][p]) for p in ("p50", "p90", "p99"))
            tpot = "/".join(ms(s["tpot_s"][p]) for p in ("p50", "p90", "p99"))
            slas = " | ".join(f"{s[sla.name]['share']:.0%} / {s[sla.name]['effective_requests_per_s']:.2f}"
                              for sla in SLAS)
            lines.append(f"| {key} | {s['offered_rate']:g} | {s['sent']} | {s['failed']} | {s['requests_per_s']:.2f}"
                         f" | {s['output_tokens_per_s']:.0f} | {ttft} | {tpot} | {slas} | {busy(s.get('client_busy'))}"
                         f" | {busy(server_busy(s, 'router'))} |")
    return lines


def compliance_table(results):
    """Per series and SLA: the highest rate with >= 95% meeting it, and the effective req/s there."""
    lines = ["| series | " + " | ".join(f"{sla.name}: highest rate ≥95% / eff. req/s there" for sla in SLAS) + " |",
             "|" + " --- |" * (1 + len(SLAS))]
    for key, rows in sweep_rows(results):
        cells = []
        for sla in SLAS:
            rate = highest_compliant_rate(rows, sla.name)
            at = next((s for s in rows if s["offered_rate"] == rate), None)
            cells.append("none" if at is None else f"{rate:g} / {at[sla.name]['effective_requests_per_s']:.2f}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def best_compliant(rows, sla_name):
    """(rate, effective req/s there, whether it was the highest rate offered) or None: a rate offered last
    and met says that server's ceiling lies above it, not where."""
    rate = highest_compliant_rate(rows, sla_name)
    if rate is None:
        return None
    at = next(s for s in rows if s["offered_rate"] == rate)
    return rate, at[sla_name]["effective_requests_per_s"], rate == max(s["offered_rate"] for s in rows)


def versus_peer_table(results, peer="hf_serve"):
    """Ours against the peer per workload and SLA: each one's effective req/s at its highest compliant rate,
    and their ratio, qualified where a ceiling was not found (issue 21's "≥ 20x HF's server")."""
    series = dict(sweep_rows(results))
    peers = {key.split("/", 2)[2]: rows for key, rows in series.items() if key.startswith(peer + "/")}
    lines = ["| ours ÷ peer | " + " | ".join(sla.name for sla in SLAS) + " |", "|" + " --- |" * (1 + len(SLAS))]
    for key, rows in series.items():
        workload = key.split("/", 2)[2]
        if key.startswith(peer + "/") or workload not in peers:
            continue
        cells = [versus_cell(best_compliant(rows, sla.name), best_compliant(peers[workload], sla.name))
                 for sla in SLAS]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines if len(lines) > 2 else []


def versus_cell(ours, theirs):
    if ours is None:
        return "ours: no rate met"
    text = f"{ours[1]:.2f} at {ours[0]:g}{'+' if ours[2] else ''}"
    if theirs is None:
        return text + " vs none: the peer met it at no rate"
    ratio = f"{ours[1] / theirs[1]:.1f}x" if theirs[1] > 0 else "-"
    bound = " (no bound: neither ceiling found)" if ours[2] and theirs[2] else (
        " (at most: the peer's ceiling not found)" if theirs[2] else (
            " (at least: ours' ceiling not found)" if ours[2] else ""))
    return f"{text} vs {theirs[1]:.2f} at {theirs[0]:g}{'+' if theirs[2] else ''}: {ratio}{bound}"


def w1_table(results):
    w1 = results.get("w1", {})
    base = (w1.get("pipeline") or {}).get("output_tokens_per_s")
    lines = ["| W1 (256 at once) | output tok/s | ÷ pipeline | client busy |", "| --- | --- | --- | --- |"]
    for name in ("pipeline", "http", "grpc"):
        row = w1.get(name)
        if not row or "output_tokens_per_s" not in row:
            lines.append(f"| {name} | {(row or {}).get('error', 'not run')} | - | - |")
            continue
        ratio = f"{row['output_tokens_per_s'] / base:.3f}" if base else "-"
        lines.append(f"| {name} | {row['output_tokens_per_s']:.0f} | {ratio} | {busy(row.get('client_busy'))} |")
    return lines


def markdown(results):
    parts = ["# W5: serving under load", "", *w1_table(results), "", *sweep_table(results), "",
             *compliance_table(results), "", *versus_peer_table(results), "",
             "rate+: the highest rate offered, met; that server's ceiling lies above it.",
             "client busy: the busiest load generator process's CPU seconds per second of the run (near 1: it may "
             "have set the pace, not the server). router busy: our router process's CPU seconds per second of the run "
             "(every thread; its Python threads share one GIL)."]
    if results.get("errors"):
        parts += ["", "errors:", *(f"- {k}: {v}" for k, v in results["errors"].items())]
    return "\n".join(parts) + "\n"


def plot(results, png_path):
    """TTFT and TPOT (p50 solid, p99 dashed) against the offered rate, one column per workload; matplotlib's
    Agg backend (no display). Returns None, or why no plot was made."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"no plot: {e}"
    rows = sweep_rows(results)
    workloads = sorted({key.split("/")[2] for key, _ in rows})
    if not workloads:
        return "no plot: no sweep was measured"
    fig, axes = plt.subplots(2, len(workloads), figsize=(6 * len(workloads), 8), squeeze=False)
    for col, workload in enumerate(workloads):
        for row, metric in enumerate(("ttft_s", "tpot_s")):
            ax = axes[row][col]
            for key, summaries in rows:
                if key.endswith("/" + workload):
                    draw_series(ax, key.rsplit("/", 1)[0], summaries, metric)
            ax.set(xlabel="offered rate (requests/s)", ylabel=f"{metric[:4].upper()} (ms)", title=workload)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return None


def draw_series(ax, label, summaries, metric):
    """p50 and p99 of one series in one colour."""
    rates = [s["offered_rate"] for s in summaries]
    color = None
    for pct, style in (("p50", "-"), ("p99", "--")):
        values = [float("nan") if s[metric][pct] is None else s[metric][pct] * 1e3 for s in summaries]
        color = ax.plot(rates, values, style, marker="o", color=color, label=f"{label} {pct}")[0].get_color()
