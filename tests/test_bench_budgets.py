"""bench_llama.py's section budgets within --time-budget-s, against plans worked out by hand."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_llama  # noqa: E402

PLAN = [("checkpoint", 50, 45), ("ours", 130, 30), ("ours_quant", 150, 30)]


def test_budgets_that_fit_stay_as_they_are():
    assert bench_llama.fit_budgets(PLAN, {}, 520) == PLAN


def test_given_budgets_stay_and_the_others_share_the_time_left():
    # 210 s: checkpoint=90 given, ours and ours_quant (280 s of estimates) scaled into 120 s: 3/7 each
    got = bench_llama.fit_budgets(PLAN, {"checkpoint": 90}, 210)
    assert [name for name, _, _ in got] == ["checkpoint", "ours", "ours_quant"] and got[0] == ("checkpoint", 90, 45)
    assert [budget for _, budget, _ in got[1:]] == pytest.approx([130 * 3 / 7, 150 * 3 / 7])


def test_a_scaled_budget_never_falls_below_its_least():
    # 165 s for 330 s of estimates: half each, but the checkpoint's 25 s would stop its build half-written
    got = bench_llama.fit_budgets(PLAN, {}, 165)
    assert got == [("checkpoint", 45, 45), ("ours", 65, 30), ("ours_quant", 75, 30)]


def test_a_section_at_its_least_still_runs_when_it_starts_late():
    # the first section's budget scaled to exactly its least (45 s), started 10 ms after the plan's start
    assert bench_llama.section_end(planned_end=45.0, now=0.01, deadline=480.0, min_s=45) == pytest.approx(45.01)


def test_a_late_section_gets_its_least_while_the_deadline_allows():
    # planned to end at 100 s, but the sections before it ran until 90 s: it may run to 120 s (its 30 s)
    assert bench_llama.section_end(planned_end=100.0, now=90.0, deadline=480.0, min_s=30) == 120.0
    # ... but never past the deadline, and not at all when the deadline leaves less than its least
    assert bench_llama.section_end(planned_end=100.0, now=450.0, deadline=480.0, min_s=30) == 480.0
    assert bench_llama.section_end(planned_end=100.0, now=460.0, deadline=480.0, min_s=30) is None
