"""W5's benchmark (benchmarks/bench_serving.py, issue 21): its SLA and percentile arithmetic against numbers worked
out by hand from synthetic timestamps, its request draws against their distributions, and a --tiny run through
a real deployment (OpenAI HTTP and gRPC) on the CPU whose figures must add up from its own raw records."""
from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))
from w5 import arrivals, processes, report, stats  # noqa: E402


def record(send, first, end, prompt, out, error=None):
    return {"send": send, "first": first, "end": end, "prompt_tokens": prompt, "output_tokens": out, "error": error}


# Times are dyadic fractions, so each comparison below is exact in floating point.
RECORDS = [
    record(0.0, 0.5, 2.5, 1024, 5),      # TTFT 0.5 (FastGen allows 2.0), TPOT 2/4 = 0.5: too slow for both SLAs
    record(1.0, 1.25, 1.625, 256, 9),    # TTFT 0.25 (allowed 0.5), TPOT 0.375/8 = 0.046875: meets both
    record(2.0, 3.5, 3.5, 1024, 1),      # TTFT 1.5: within FastGen's 2.0, over the interactive 1 s; no TPOT
    record(3.0, None, 4.0, 64, 0, "boom"),  # failed: meets nothing, not completed
    record(3.5, 3.75, 6.0, 512, 10),     # TTFT 0.25, TPOT 2.25/9 = 0.25: over both TPOT limits
]


def test_ttft_and_tpot_by_hand():
    assert [stats.ttft(r) for r in RECORDS] == [0.5, 0.25, 1.5, None, 0.25]
    assert [stats.tpot(r) for r in RECORDS] == [0.5, 0.046875, None, None, 0.25]


def test_sla_checks_by_hand():
    assert [stats.meets(r, stats.FASTGEN) for r in RECORDS] == [False, True, True, False, False]
    assert [stats.meets(r, stats.INTERACTIVE) for r in RECORDS] == [False, True, False, False, False]


def test_sla_limits_are_inclusive():
    # FastGen: 512 prompt tokens may take 1 s; 6 tokens/s is a TPOT of 1/6 s. Interactive: 1 s and 50 ms.
    on_the_line = record(0.0, 1.0, 1.0 + 6 * (1 / 6), 512, 7)
    assert stats.meets(on_the_line, stats.FASTGEN)
    assert not stats.meets(record(0.0, 1.0 + 2 ** -20, 2.0, 512, 7), stats.FASTGEN)
    assert stats.meets(record(0.0, 1.0, 1.1875, 8, 5), stats.INTERACTIVE)  # TTFT 1 s, TPOT 46.875 ms
    assert not stats.meets(record(0.0, 1.0, 1.25, 8, 5), stats.INTERACTIVE)  # TPOT 62.5 ms


def test_percentiles_interpolate_linearly():
    assert stats.percentiles([4.0, 1.0, 3.0, 2.0]) == pytest.approx({"p50": 2.5, "p90": 3.7, "p99": 3.97})
    assert stats.percentiles([None, 7.0]) == {"p50": 7.0, "p90": 7.0, "p99": 7.0}
    assert stats.percentiles([None]) == {"p50": None, "p90": None, "p99": None}


def test_one_rate_summary_by_hand():
    s = stats.summarize(RECORDS, 1.25, t0=0.0, window_s=4.0)
    # the last answer (6.0) ends after the 4 s window: throughput is over 6 s
    assert (s["sent"], s["completed"], s["failed"], s["span_s"]) == (5, 4, 1, 6.0)
    assert s["requests_per_s"] == pytest.approx(4 / 6)
    assert s["output_tokens"] == 25 and s["output_tokens_per_s"] == pytest.approx(25 / 6)
    # TTFTs of the completed: 0.25, 0.25, 0.5, 1.5; TPOTs: 0.046875, 0.25, 0.5
    assert s["ttft_s"] == pytest.approx({"p50": 0.375, "p90": 1.2, "p99": 1.47})
    assert s["tpot_s"] == pytest.approx({"p50": 0.25, "p90": 0.45, "p99": 0.495})
    assert s["fastgen"] == pytest.approx({"met": 2, "share": 0.4, "effective_requests_per_s": 2 / 6})
    assert s["interactive"] == pytest.approx({"met": 1, "share": 0.2, "effective_requests_per_s": 1 / 6})


def test_span_is_the_window_while_the_server_keeps_up():
    quick = [record(10.0, 10.25, 10.5, 8, 2)]
    assert stats.summarize(quick, 1.0, t0=10.0, window_s=4.0)["requests_per_s"] == 0.25


def test_highest_compliant_rate_is_the_highest_at_95_percent():
    def at(rate, share):
        return {"offered_rate": rate, "interactive": {"share": share}}
    sweep = [at(1, 1.0), at(2, 0.95), at(4, 0.96), at(8, 0.949)]
    assert stats.highest_compliant_rate(sweep, "interactive") == 4
    assert stats.highest_compliant_rate([at(1, 0.5)], "interactive") is None


def test_compliance_table_names_the_rate_and_its_effective_throughput():
    rows = [dict(stats.summarize(RECORDS, rate, 0.0, 4.0)) for rate in (1.0, 2.0)]
    rows[0]["fastgen"] = {"share": 1.0, "effective_requests_per_s": 0.75, "met": 3}
    results = {"runs": [{"system": "ours", "frontend": "http", "workload": "w", "summary": s} for s in rows]}
    assert "| ours/http/w | 1 / 0.75 | none |" in report.markdown(results)


def test_poisson_arrivals_and_length_spread():
    shape = arrivals.LoadShape("test", 1200, 128)
    reqs = arrivals.make_requests(shape, rate=50.0, duration_s=100.0, first_special=1000)
    assert abs(len(reqs) - 5000) < 4 * 5000 ** 0.5  # Poisson count: mean 5000, sd ~71
    gaps = [b.at_s - a.at_s for a, b in zip(reqs, reqs[1:])]
    assert min(gaps) >= 0 and statistics.mean(gaps) == pytest.approx(0.02, rel=0.05)
    assert statistics.stdev(gaps) == pytest.approx(0.02, rel=0.08)  # exponential gaps: sd equals the mean
    prompt_lens = [len(r.prompt_ids) for r in reqs]
    assert statistics.mean(prompt_lens) == pytest.approx(1200, rel=0.02)
    assert statistics.stdev(prompt_lens) == pytest.approx(0.3 * 1200, rel=0.08)
    assert 1 <= min(r.max_tokens for r in reqs) and max(r.max_tokens for r in reqs) <= 256
    assert max(max(r.prompt_ids) for r in reqs) < 1000


def test_each_front_end_gets_the_same_arrivals_and_lengths_but_prompts_of_its_own():
    """One deployment serves both front ends' runs, so the second would hit the prefix cache with the first's
    prompts: same times and lengths, no 16-token prefix (a KV block's worth) in common."""
    shape = arrivals.LoadShape("test", 64, 16)
    http, grpc = (arrivals.make_requests(shape, 20.0, 5.0, 1000, ids_from=end) for end in ("http", "grpc"))
    assert [(r.at_s, len(r.prompt_ids), r.max_tokens) for r in http] == \
        [(r.at_s, len(r.prompt_ids), r.max_tokens) for r in grpc]
    firsts = [tuple(r.prompt_ids[:16]) for r in http + grpc if len(r.prompt_ids) >= 16]
    assert len(firsts) > 100 and len(set(firsts)) == len(firsts)
    assert arrivals.make_requests(shape, 20.0, 5.0, 1000, ids_from="http")[3].prompt_ids == http[3].prompt_ids


def test_draws_stay_within_one_and_twice_the_mean():
    rng = random.Random(0)
    assert {arrivals.draw_length(rng, 2) for _ in range(2000)} <= {1, 2, 3, 4}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("serving")
    command = [sys.executable, str(BENCH / "bench_serving.py"), "--tiny", "--out", str(out / "w5"),
               "--ckpt", str(out / "llama-tiny"), "--workloads", "1200x128", "--rates", "1,2", "--duration-s", "2",
               "--w1-requests", "4", "--py-spy", "ours/grpc/1200x128@2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads((out / "w5" / "results.json").read_text()), (out / "w5" / "report.md").read_text()


def test_tiny_run_measures_every_rate_through_both_front_ends(tiny_run):
    results, md = tiny_run
    assert results["errors"] == {} and results["skipped"] == []
    assert sorted((r["frontend"], r["rate"]) for r in results["runs"]) == [("grpc", 1), ("grpc", 2), ("http", 1),
                                                                           ("http", 2)]
    for run in results["runs"]:
        key = f"| ours/{run['frontend']}/1200x128 | {run['rate']:g} |"
        assert key in md


def test_tiny_run_measures_our_router_and_replica_cpu_per_run(tiny_run):
    """Each of our runs carries the router's and the replica's CPU seconds over it (/proc counts in 10 ms ticks, so
    a two-request run may show 0; the replica generated every token of the four runs, so it shows some), and the
    report divides the router's by the run's span."""
    results, md = tiny_run
    for run in results["runs"]:
        used, span = run["summary"]["server_cpu_s"], run["summary"]["span_s"]
        assert set(used) == {"router", "replica"} and min(used.values()) >= 0
        assert f"| {used['router'] / span:.2f} |" in md.split(f"| ours/{run['frontend']}/1200x128 | {run['rate']:g} |")[1]
    assert sum(run["summary"]["server_cpu_s"]["replica"] for run in results["runs"]) > 0
    if processes.py_spy_exe():  # installed here: the named run was recorded, each of its processes
        out = Path(results["args"]["out"])
        assert {p.name for p in out.glob("pyspy-*")} == {"pyspy-grpc-1200x128-2-router.speedscope.json",
                                                        "pyspy-grpc-1200x128-2-replica.speedscope.json"}


def test_py_spy_must_name_one_of_our_runs():
    import bench_serving

    args = bench_serving.parse_args(["--tiny", "--rates", "1,2", "--py-spy", "ours/grpc/1200x128@2"])
    assert args.py_spy == ["ours/grpc/1200x128@2"]
    with pytest.raises(SystemExit):
        bench_serving.parse_args(["--tiny", "--rates", "1,2", "--py-spy", "grpc/1200x128@2"])


def test_server_busy_by_hand():
    assert report.server_busy({"server_cpu_s": {"router": 3.0}, "span_s": 4.0}, "router") == 0.75
    assert report.server_busy({"span_s": 4.0}, "router") is None  # the peer's runs: not measured


def test_tiny_run_answers_are_whole_and_its_figures_add_up(tiny_run):
    results, _ = tiny_run
    for run in results["runs"]:
        records, s = run["records"], run["summary"]
        assert all(r["error"] is None for r in records)
        # ignore_eos: every answer has its drawn length; the server counted the prompt ids we sent
        assert [r["output_tokens"] for r in records] == [r["max_tokens"] for r in records]
        assert [r["prompt_tokens"] for r in records] == [r["sent_prompt_tokens"] for r in records]
        assert all(r["send"] <= r["first"] <= r["end"] for r in records)
        span = max(run["t0"] + 2.0, *(r["end"] for r in records)) - run["t0"]
        assert s["sent"] == len(records) and s["span_s"] == pytest.approx(span)
        assert s["output_tokens_per_s"] == pytest.approx(sum(r["max_tokens"] for r in records) / span)


def test_tiny_run_has_w1_through_the_pipeline_and_both_servers(tiny_run):
    results, md = tiny_run
    for name in ("pipeline", "http", "grpc"):
        assert results["w1"][name]["output_tokens_per_s"] > 0, name
    assert results["w1"]["http"]["output_tokens"] == results["w1"]["http"]["requested_output_tokens"]
    assert "| grpc |" in md


def test_profile_serving_counts_every_token_and_each_process_cpu(tmp_path):
    """benchmarks/profile_serving.py --tiny (the GPU run's profiling tool) end to end on the CPU: 16 requests of
    8 tokens through gRPC are 128 output tokens, counted from the client's own stream, and the router and the
    replica each used some CPU while serving them."""
    out = tmp_path / "prof"
    command = [sys.executable, str(BENCH / "profile_serving.py"), "--tiny", "--out", str(out), "--requests", "16",
               "--new-tokens", "8", "--ckpt", str(tmp_path / "llama-tiny"), "--client-processes", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "profile.json").read_text())
    assert result["server"]["failed"] == 0 and result["server"]["output_tokens"] == 16 * 8
    assert result["pipeline"]["output_tokens"] == 16 * 8
    # two load generator processes shared the requests; each measured its own CPU
    assert set(result["cpu_seconds"]) == {"router", "replica", "client0", "client1"}
    assert min(result["cpu_seconds"].values()) > 0


def test_a_run_split_over_client_processes_comes_back_in_the_requests_order():
    from w5.loadgen import interleaved
    # seven requests dealt to three processes: 0,3,6 / 1,4 / 2,5
    assert interleaved([["r0", "r3", "r6"], ["r1", "r4"], ["r2", "r5"]]) == [f"r{i}" for i in range(7)]
    assert interleaved([["a", "b"]]) == ["a", "b"]


def test_client_busy_is_the_busiest_client_process_cpu_per_second_of_the_run():
    assert stats.client_busy([1.5, 3.0, 0.5], 4.0) == 0.75
    assert stats.client_busy([], 4.0) is None and stats.client_busy([1.0], 0.0) is None


def test_each_front_ends_w1_has_the_pipelines_lengths_and_no_prompt_block_in_common():
    """The deployment caches prefixes: W1 sent through a second front end with the first one's prompts would
    hit the cache. Each front end's variant keeps W1's lengths and shares no 16-token prefix (a KV block's
    worth) with the pipeline's prompts or another variant's."""
    from w5.pipeline_w1 import w1_workload

    runs = [w1_workload(64, False, variant) for variant in range(3)]
    assert all(r.max_new_tokens == runs[0].max_new_tokens for r in runs)
    assert all([len(p) for p in r.prompts] == [len(p) for p in runs[0].prompts] for r in runs)
    firsts = [tuple(p[:16]) for r in runs for p in r.prompts]
    assert len(set(firsts)) == len(firsts)
    assert w1_workload(64, False, 0).prompts == runs[0].prompts  # the pipeline's W1 is bench_llama's, unchanged


def test_the_peer_finds_a_hub_cache_folder_to_scan(tmp_path, monkeypatch):
    """`transformers serve` scans the hub cache on /v1/models; where the folder never existed (the H200)
    huggingface_hub raised CacheNotFound and the peer never came up."""
    from huggingface_hub import constants, scan_cache_dir
    from huggingface_hub.errors import CacheNotFound
    from w5 import servers

    missing = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(missing))
    with pytest.raises(CacheNotFound):
        scan_cache_dir(missing)
    servers.ensure_hub_cache()
    assert scan_cache_dir(missing).repos == frozenset()


def at_rate(rate, interactive, fastgen):
    """A summary at `rate`: (share, effective req/s) per SLA."""
    return {"offered_rate": rate, "interactive": {"share": interactive[0], "effective_requests_per_s": interactive[1]},
            "fastgen": {"share": fastgen[0], "effective_requests_per_s": fastgen[1]}}


def test_versus_peer_table_divides_at_each_ones_highest_compliant_rate_and_says_what_bounds_it():
    ours = [at_rate(16, (1.0, 16.0), (1.0, 16.0)), at_rate(24, (0.5, 12.0), (1.0, 22.0))]
    peer = [at_rate(1, (0.0, 0.0), (1.0, 0.8)), at_rate(2, (0.0, 0.0), (0.96, 1.6))]
    runs = [{"system": "ours", "frontend": "grpc", "workload": "w", "summary": s} for s in ours]
    runs += [{"system": "hf_serve", "frontend": "http", "workload": "w", "summary": s} for s in peer]
    table = "\n".join(report.versus_peer_table({"runs": runs}))
    # interactive: ours 16 req/s at 16 (24 missed it), the peer at no rate; FastGen: 22/1.6 = 13.75, both
    # at their highest offered rates, so neither ceiling was found
    assert ("| ours/grpc/w | 22.00 at 24+ vs 1.60 at 2+: 13.8x (no bound: neither ceiling found) "
            "| 16.00 at 16 vs none: the peer met it at no rate |") in table
    assert report.versus_peer_table({"runs": runs[:2]}) == []  # no peer in the run: no table


def test_a_run_is_reported_at_its_deadline_even_when_the_client_will_not_close(monkeypatch):
    """One request answers at once, one never does; the client's close then hangs. The run's records must reach
    ``report`` at the deadline (the first done, the second unfinished), not wait on the close."""
    import asyncio
    import time

    from w5 import loadgen

    async def send_one(request, record):
        if request.max_tokens == 2:
            await asyncio.sleep(3600)  # a stream that never ends
        record["token_times"].append(time.perf_counter())
        record["output_tokens"] = 1

    class StuckClose:
        def __init__(self, target):
            pass

        async def __aenter__(self):
            return send_one

        async def __aexit__(self, *exc):
            await asyncio.sleep(3600)

    monkeypatch.setattr(loadgen, "connect", StuckClose)
    reported = []

    async def run():
        start = time.perf_counter
        requests = [arrivals.Request(0.0, [1, 2], 1), arrivals.Request(0.0, [3], 2)]
        drive = asyncio.ensure_future(loadgen.drive({}, requests, 0.3, start, reported.append))
        await asyncio.sleep(2.0)
        assert not drive.done()  # still stuck in the close
        drive.cancel()

    asyncio.run(run())
    [records] = [r["records"] for r in reported]
    assert records[0]["error"] is None and records[0]["output_tokens"] == 1
    assert records[1]["error"] == "unfinished at the run's deadline" and records[1]["first"] is None
