"""PNG of a benchmark results JSON: one panel per workload (mii-core and its peers as bars, the floor as a
dashed line) and one for the decode-step ceiling by batch size.

    python benchmarks/plot_results.py RESULTS.json [-o RESULTS.png]

Run it where matplotlib is installed (the GPU machine has none); it reads only the JSON.
"""

import argparse
import json
import math
import os
import sys

COLORS = {"ours": "#1f77b4", "hf_generate": "#ff7f0e", "hf_cb": "#2ca02c", "hf_static": "#d62728"}
LABELS = {"ours": "mii-core", "hf_generate": "HF generate", "hf_cb": "HF cont. batching",
          "hf_static": "HF static+compile"}


def _workload_panel(ax, row):
    systems = [s for s, v in row["values"].items() if isinstance(v, (int, float))]
    values = [row["values"][s] for s in systems]
    ax.bar([LABELS[s] for s in systems], values, color=[COLORS[s] for s in systems])
    for i, v in enumerate(values):
        ax.annotate(f"{v:,.3g}", (i, v), ha="center", va="bottom", fontsize=8)
    if row.get("floor"):
        ax.axhline(row["floor"], color="black", linestyle="--", linewidth=1)
        ax.annotate(f"floor {row['floor']:,.3g} ({row['bound']})", (0.01, row["floor"]), xycoords=("axes fraction", "data"),
                    va="bottom", fontsize=8)
    arrow = "higher is better" if row["higher_is_better"] else "lower is better"
    ax.set_title(f"{row['workload']}: {row['metric']} ({arrow})", fontsize=9)
    ax.tick_params(axis="x", labelsize=7, rotation=15)


def _chain_panel(ax, chain):
    batches = sorted(chain["batches"], key=int)
    ms = [chain["batches"][b]["ms"] for b in batches]
    ax.plot([int(b) for b in batches], ms, marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch")
    ax.set_ylabel("ms per decode step")
    mode = chain["batches"][batches[0]]["mode"]
    ax.set_title(f"decode step, projections only ({chain['weight_bytes'] / 1e9:.1f} GB, {mode})", fontsize=9)


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    table = [r for r in res.get("table", []) if any(isinstance(v, (int, float)) for v in r["values"].values())]
    chain = res["figures"].get("ceilings.decode_chain")
    n = len(table) + (1 if chain else 0)
    if n == 0:
        raise SystemExit("nothing to plot: the results hold no figures")
    cols = min(3, n)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(5 * cols, 3.6 * math.ceil(n / cols)), squeeze=False)
    flat = [ax for line in axes for ax in line]
    for ax, row in zip(flat, table):
        _workload_panel(ax, row)
    if chain:
        _chain_panel(flat[len(table)], chain)
    for ax in flat[n:]:
        ax.axis("off")
    gpu = res["env"].get("gpu") or res["figures"].get("ceilings", {}).get("device")
    fig.suptitle(f"mii-core benchmark, {gpu}, {res['date_utc'][:10]}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results")
    p.add_argument("-o", "--out", default=None, help="default: the JSON's name with .png")
    a = p.parse_args(argv)
    with open(a.results) as f:
        res = json.load(f)
    print(plot(res, a.out or os.path.splitext(a.results)[0] + ".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
