"""guidellm (``guidellm run``, its command line, as its users run it) against a deployment: its default
backend (``openai_http``: chat completions, streamed, with ``stream_options.continuous_usage_stats``, after
``GET /health`` and ``GET /v1/models``), synthetic data with a fixed output length (guidellm sends vLLM's
``ignore_eos``), a constant-rate profile of a few seconds. No request may fail, and every one must
produce exactly the output length asked (the server's own usage counts, which guidellm records)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from support.clients import require_client

OUTPUT_TOKENS = 8
SECONDS = 4
RATE = 4  # requests per second


def run_guidellm(url: str, tokenizer: str, output: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "guidellm", "run", "--backend", f"kind=openai_http,target={url}",
               "--profile", f"kind=constant,rate={RATE}",
               "--data", f"kind=synthetic_text,prompt_tokens=16,output_tokens={OUTPUT_TOKENS}",
               "--constraint", f"kind=max_duration,seconds={SECONDS}",
               # synthetic prompts are cut to length with a tokenizer: the checkpoint's own folder, offline
               "--tokenizer", f"kind=huggingface_auto,model={tokenizer}",
               "--output", f"kind=json,path={output}", "--disable-console-interactive"]
    # one worker process: a resource setting of this 2-core test machine, not a request behaviour
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GUIDELLM__MAX_WORKER_PROCESSES": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


def check_benchmark(report_path) -> None:
    benchmark = json.loads(report_path.read_text())["benchmarks"][0]
    totals = benchmark["metrics"]["request_totals"]
    assert totals["errored"] == 0, benchmark["requests"]["errored"][:2]
    assert totals["successful"] >= RATE * SECONDS // 2, totals
    assert {r["output_tokens"] for r in benchmark["requests"]["successful"]} == {OUTPUT_TOKENS}


def test_guidellm_default_backend_runs_without_errors(api, chat_checkpoint, tmp_path):
    require_client("guidellm", "guidellm")
    _, _, url = api
    report = tmp_path / "report.json"
    done = run_guidellm(url, str(chat_checkpoint), str(report))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    check_benchmark(report)
