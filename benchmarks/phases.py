"""One section's bookkeeping: log lines on the run's clock, fail-soft phases, and its part of the results
written after every phase (atomically), so that a section killed at its time limit still leaves its numbers.
Also the two measurements every system shares: batch-1 latency and whole-batch throughput."""

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import traceback

import kernel_variants


def sync():
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def stop_group(proc, term_grace=5, kill_grace=30):
    """Ends the process group led by `proc` (started with start_new_session=True): SIGTERM, then SIGKILL."""
    for sig, grace in ((signal.SIGTERM, term_grace), (signal.SIGKILL, kill_grace)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def write_json(path, obj):
    """Write then rename: a reader (or a kill) never sees half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=str)
    os.replace(tmp, path)


class Phases:
    """Clock (seconds since the run began), deadline (time.time()), and the section's results file."""

    def __init__(self, part_path, t0, deadline):
        self.part_path, self.t0, self.deadline = part_path, t0, deadline
        self.part = {"figures": {}, "errors": {}, "skipped": [], "info": {}}

    def log(self, msg):
        print(f"[bench {time.time() - self.t0:7.1f}s] {msg}", flush=True)

    def left(self):
        return self.deadline - time.time()

    def phase(self, key, fn, *a, min_s=0.0):
        """Runs fn(*a) unless fewer than `min_s` seconds are left; a failure is recorded and the section
        goes on. A dict result is stored under figures[key]."""
        if self.left() <= min_s:
            self.log(f"SKIP {key}: {max(self.left(), 0):.0f}s left of this section's budget, needs {min_s:.0f}")
            self.part["skipped"].append(key)
            self.save()
            return None
        self.log(f"start {key}")
        self.part["running"] = key  # what a section stopped at its time limit was doing
        self.save()
        try:
            with kernel_variants.watch() as made:
                out = fn(*a)
        except Exception as e:  # noqa: BLE001 - one broken part must not hide the others' numbers
            traceback.print_exc()
            sys.stdout.flush()
            self.part["errors"][key] = f"{type(e).__name__}: {e}"[:2000]
            self.log(f"FAILED {key}: {type(e).__name__}: {str(e)[:300]}")
            self.part.pop("running", None)
            self.save()
            return None
        self.part.pop("running", None)
        self._note_variants(key, made)
        if isinstance(out, dict):
            self.part["figures"][key] = out
            brief = {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()
                     if not isinstance(v, (list, dict))}
            self.log(f"done {key}: {json.dumps(brief, default=str)[:400]}")
        else:
            self.log(f"done {key}")
        self.save()
        return out

    def _note_variants(self, key, made):
        """The Triton kernel variants the phase made ready (``kernel_variants``): under info, and in the log
        when there were any, so that a timed workload that compiled says so."""
        self.part["info"].setdefault("kernel_variants_made", {})[key] = made
        if made.get("count"):
            names = ", ".join(f"{name} x{n}" for name, n in list(made["kernels"].items())[:8])
            self.log(f"{key} made {made['count']} Triton kernel variants ready: {names}")

    def record(self, key, value):
        """A figure that is not a phase's result (a time, a note such as "not available: ...")."""
        self.part["figures"][key] = value
        self.save()

    def save(self):
        write_json(self.part_path, self.part)


def latency(call, prompt, n_new, repeats):
    """ms per output token = (t(n_new) - t(1)) / (n_new - 1), medians of `repeats`; also plain t(n_new)/n_new.
    call(prompts, n) returns (seconds, ...)."""
    # interleaved, so that a drift in clocks or load hits both lengths alike
    pairs = [(call([prompt], 1)[0], call([prompt], n_new)[0]) for _ in range(repeats)]
    t1, tn = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
    return {"ms_per_token": (tn - t1) / (n_new - 1) * 1e3, "ms_per_token_plain": tn / n_new * 1e3,
            "seconds_1_token": t1, "seconds_n_tokens": tn, "new_tokens": n_new,
            "prompt_tokens": len(prompt), "repeats": repeats}


def throughput(call, wl):
    """The whole workload submitted at once; call(prompts, max_new) returns (seconds, output tokens, short)."""
    secs, out_tokens, short = call(wl.prompts, wl.max_new_tokens)
    return {"seconds": secs, "requests": len(wl.prompts), "output_tokens": out_tokens,
            "output_tokens_per_s": out_tokens / secs, "prompt_tokens": wl.prompt_tokens,
            "prompt_tokens_per_s": wl.prompt_tokens / secs, "requests_short_of_requested": short}
