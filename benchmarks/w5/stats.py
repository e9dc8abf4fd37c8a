"""The arithmetic of W5 from each request's timestamps: TTFT, TPOT, percentiles, SLA checks, effective throughput.

Pure functions over plain records (no clock, no network) so that tests can check them against numbers worked
out by hand. Times are seconds on one clock (the load generator's perf_counter).
"""

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

COMPLIANT_SHARE = 0.95  # "the highest rate at which >= 95% of requests meet the SLA"
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Sla:
    """A latency target: TTFT within ttft_limit(prompt_tokens) seconds and TPOT at most tpot_limit_s."""
    name: str
    ttft_limit: Callable[[int], float]
    tpot_limit_s: float


# FastGen's: the prompt processed at >= 512 tokens/s (first token within prompt/512 s), >= 6 generated tokens/s
FASTGEN = Sla("fastgen", lambda prompt_tokens: prompt_tokens / 512.0, 1.0 / 6.0)
INTERACTIVE = Sla("interactive", lambda prompt_tokens: 1.0, 0.050)
SLAS = (FASTGEN, INTERACTIVE)


def ttft(record: dict) -> Optional[float]:
    """Seconds from sending the request to its first token; None for a request that never got one."""
    if record.get("error") or record.get("first") is None:
        return None
    return record["first"] - record["send"]


def tpot(record: dict) -> Optional[float]:
    """Mean seconds per output token after the first (FastGen's inverse generation rate); None when the request
    failed or made fewer than 2 tokens (no gap to measure)."""
    if ttft(record) is None or record["output_tokens"] < 2:
        return None
    return (record["end"] - record["first"]) / (record["output_tokens"] - 1)


def meets(record: dict, sla: Sla) -> bool:
    """A failed request never meets an SLA; a one-token answer has no TPOT and is judged on TTFT alone."""
    first = ttft(record)
    if first is None or first > sla.ttft_limit(record["prompt_tokens"]):
        return False
    per_token = tpot(record)
    return per_token is None or per_token <= sla.tpot_limit_s


def percentiles(values: list) -> dict:
    """p50/p90/p99 (numpy's linear interpolation) of the values that exist; None for each if there are none."""
    present = [v for v in values if v is not None]
    if not present:
        return {f"p{q}": None for q in PERCENTILES}
    return {f"p{q}": float(np.percentile(present, q)) for q in PERCENTILES}


def span_s(records: list, t0: float, window_s: float) -> float:
    """From the run's start t0 to the later of the arrival window's end and the last answer: the offered rate
    while the server keeps up, less once answers spill past the window (a lone fast request does not count
    as a high rate)."""
    ends = [r["end"] for r in records if not r.get("error")]
    return max([t0 + window_s, *ends]) - t0


def summarize(records: list, offered_rate: Optional[float], t0: float, window_s: float = 0.0) -> dict:
    """One rate's figures: throughput over span_s (t0: the run's start, window_s: its arrival window), TTFT and
    TPOT percentiles, and per SLA the share of all sent requests that met it and the requests/s that met it
    (effective throughput)."""
    done = [r for r in records if not r.get("error")]
    span = span_s(records, t0, window_s)
    per_s = (lambda n: n / span) if span > 0 else (lambda n: 0.0)
    out = {"offered_rate": offered_rate, "sent": len(records), "completed": len(done),
           "failed": len(records) - len(done), "span_s": span, "requests_per_s": per_s(len(done)),
           "output_tokens": sum(r["output_tokens"] for r in done),
           "ttft_s": percentiles([ttft(r) for r in done]), "tpot_s": percentiles([tpot(r) for r in done])}
    out["output_tokens_per_s"] = per_s(out["output_tokens"])
    for sla in SLAS:
        met = sum(meets(r, sla) for r in records)
        out[sla.name] = {"met": met, "share": met / len(records) if records else 0.0,
                         "effective_requests_per_s": per_s(met)}
    return out


def client_busy(client_cpu_s: list, span_s: float) -> Optional[float]:
    """The busiest load generator process's CPU seconds per second of the run: near 1, that process, not the
    server, may have set the pace (its event loop could not read the streams faster)."""
    return max(client_cpu_s) / span_s if client_cpu_s and span_s > 0 else None


def highest_compliant_rate(summaries: list, sla_name: str) -> Optional[float]:
    """The highest offered rate whose share meeting the SLA is >= 95%; None if no rate reaches it."""
    rates = [s["offered_rate"] for s in summaries
             if s["offered_rate"] is not None and s[sla_name]["share"] >= COMPLIANT_SHARE]
    return max(rates) if rates else None
