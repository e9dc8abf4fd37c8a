"""Issue 17's family rows of the benchmark (benchmarks/bench_llama.py --sections qwen3_moe,gemma2) as a CPU
run at toy shapes: each section builds its checkpoint, runs W1 through our engine and HF generate, and the
report holds both beside the floor. The floors are checked against sums worked out here from the tiny
shapes and W1's lengths, and the ratios against the figures they are made of."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import workloads  # noqa: E402

ROWS = {"qwen3_moe": "Qwen3-MoE-shaped W1", "gemma2": "Gemma-2-9B-shaped W1"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_families") / "bench.json"
    command = [sys.executable, str(BENCH / "bench_llama.py"), "--tiny", "--sections", "ceilings,qwen3_moe,gemma2",
               "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(out.read_text()), out.with_suffix(".md").read_text()


def tiny_w1():
    w1 = workloads.make_w1(8, 510, tiny=True)
    return [len(p) for p in w1.prompts], w1.max_new_tokens


def test_sections_ran_alone(tiny_run):
    res, _ = tiny_run
    assert res["errors"] == {} and res["skipped"] == []
    assert list(res["sections"]) == ["ceilings", "qwen3_moe", "gemma2"]  # no Llama checkpoint asked for
    assert [s["budget_s"] for s in res["sections"].values()] == [20, 250, 250]  # the default 520 s, unscaled
    assert all(s["status"] == "ok" for s in res["sections"].values())
    assert "checkpoint" not in res and set(res["family_checkpoints"]) == {"qwen3_moe", "gemma2"}


def test_w1_through_ours_and_hf_generate(tiny_run):
    res, _ = tiny_run
    _, outputs = tiny_w1()
    for name in ROWS:
        ours, hf = res["figures"][f"ours.{name}_W1"], res["figures"][f"hf_generate.{name}_W1"]
        assert ours["requests"] == hf["requests"] == 8 and ours["requests_short_of_requested"] == 0
        assert ours["output_tokens"] == hf["output_tokens"] == sum(outputs)
        assert not hf["cut_by_time_budget"]


def test_rows_hold_ratios_of_their_figures(tiny_run):
    res, table = tiny_run
    rows = {r["workload"]: r for r in res["table"]}
    for name, label in ROWS.items():
        row, f = rows[label], res["floors"][f"{name.upper()}_W1"]
        ours = res["figures"][f"ours.{name}_W1"]["output_tokens_per_s"]
        hf = res["figures"][f"hf_generate.{name}_W1"]["output_tokens_per_s"]
        assert row["speedup_vs"]["hf_generate"] == pytest.approx(ours / hf)
        assert row["x_floor"] == pytest.approx(f["output_tokens_per_s"] / ours)
        tokens = f["output_tokens_per_s"] * f["floor_s"]
        assert row["x_memory_floor"] == pytest.approx(tokens / f["memory_s"] / ours)
        assert f"| {label} | output tok/s |" in table
        targets = {t["target"]: t for t in res["targets"]}
        assert targets[f"{label} >= 20x HF generate"]["value"] == pytest.approx(ours / hf)
        assert targets[f"{label} within 2x of its memory floor"]["value"] == pytest.approx(row["x_memory_floor"])


def test_qwen3_moe_floor_by_hand(tiny_run):
    res, _ = tiny_run
    f, read_Bps = res["floors"]["QWEN3_MOE_W1"], res["floors"]["read_Bps"]
    prompts, outputs = tiny_w1()
    # per layer: q, o (4 heads of 32 over hidden 64), k, v (2 of 32), the router (8), 8 experts of 3 x 64 x 32
    attn, router, expert = 64 * 128 * 2 + 64 * 64 * 2, 64 * 8, 3 * 64 * 32
    dense, head = 2 * (attn + router), 512 * 64

    def weights(tokens):  # experts read: 8 x (1 - (1 - 2/8)^tokens) per layer, float32
        return 4 * (dense + head + 2 * expert * 8 * (1 - 0.75 ** tokens))
    steps = max(outputs)
    weight_bytes = weights(sum(prompts))
    kv_tokens = 0
    for j in range(1, steps):
        live = [p for p, o in zip(prompts, outputs) if o - 1 >= j]
        weight_bytes += weights(len(live))
        kv_tokens += sum(p + j for p in live)
    kv_bytes = kv_tokens * 2 * 2 * 2 * 32 * 4  # K and V, 2 layers, 2 kv heads of 32, float32
    assert f["steps"] == steps
    assert f["weight_bytes_read"] == pytest.approx(weight_bytes)
    assert f["kv_bytes_read"] == kv_bytes
    assert f["memory_s"] == pytest.approx((weight_bytes + kv_bytes) / read_Bps)


def test_gemma2_floor_by_hand(tiny_run):
    res, _ = tiny_run
    f, read_Bps = res["floors"]["GEMMA2_W1"], res["floors"]["read_Bps"]
    prompts, outputs = tiny_w1()
    per_step = 4 * (2 * (64 * 128 * 2 + 64 * 64 * 2 + 3 * 64 * 128) + 512 * 64)  # tied head read each step
    steps = max(outputs)
    full = windowed = 0  # layer 0 sees the last 16 keys, layer 1 all of them
    for j in range(1, steps):
        live = [p for p, o in zip(prompts, outputs) if o - 1 >= j]
        full += sum(p + j for p in live)
        windowed += sum(min(p + j, 16) for p in live)
    assert windowed < full  # tiny W1 runs past the window
    kv_bytes = (full + windowed) * 2 * 2 * 32 * 4  # K and V of 2 kv heads of 32 per layer, float32
    assert f["weight_bytes_read"] == steps * per_step
    assert f["kv_bytes_read"] == kv_bytes
    assert f["memory_s"] == pytest.approx((steps * per_step + kv_bytes) / read_Bps)
