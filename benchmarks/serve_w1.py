"""W1 through a deployment's client (issue 11, run 3): `mii_core.serve(...)`, then every W1 request from its
own thread through the Python client at once (as offline W1 submits the whole batch), greedy, EOS ignored.

Prompts travel as text: the benchmark tokenizer maps the word "t<i>" to id i (checkpoint._save_tokenizer),
so " ".join("t<i>") is exactly the token list; each answer's prompt_length is checked against it. Output
tokens count at most the requested number per request. Past the section's deadline the requests still
running are abandoned (CUT: finished requests' tokens only) and the deployment is ended.
"""

import os
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor, wait

from mii_core.serving.ports import port_is_free

GREEDY = dict(ignore_eos=True, do_sample=False)


def free_port_block(count):
    """A base port with `count` consecutive free ports, below the ephemeral range (no client takes one)."""
    for _ in range(200):
        base = random.randrange(20000, 30000)
        if all(port_is_free("127.0.0.1", base + i) for i in range(count)):
            return base
    raise RuntimeError("no block of free ports found")


def rendezvous_port():
    """A torch_dist_port whose replica-1 port (+100, MII's rule) is free too."""
    while True:
        port = free_port_block(1)
        if port_is_free("127.0.0.1", port + 100):
            return port


def as_text(ids):
    return " ".join(f"t{i}" for i in ids)


def run(ph, name, path, options, w1, concurrency, deadline):
    import mii_core
    started = {}

    def start():
        t = time.perf_counter()
        started["client"] = mii_core.serve(path, **options)
        return {"startup_s": time.perf_counter() - t, "replicas": len(started["client"].health()["replicas"])}
    try:
        if ph.phase(f"{name}.startup", start) is None:
            return
        client = started["client"]
        warm = [as_text(p[:16]) for p in w1.prompts[:2 * options["replica_num"]]]
        ph.phase(f"{name}.first_call", lambda: {"seconds": timed_batch(client, warm, [4] * len(warm),
                                                                       len(warm), deadline)["seconds"]})
        ph.phase(f"{name}.W1", timed_batch, client, [as_text(p) for p in w1.prompts], w1.max_new_tokens,
                 concurrency or len(w1.prompts), deadline, [len(p) for p in w1.prompts], min_s=10)
    finally:
        end_deployment(started.get("client"), options["deployment_name"], ph)


def timed_batch(client, texts, max_new, concurrency, deadline, prompt_lens=None):
    """Each request from its own thread; seconds until the last answer (or the deadline: CUT)."""
    def one(i):
        r = client.generate([texts[i]], max_new_tokens=max_new[i], **GREEDY)[0]
        return r.prompt_length, min(r.generated_length, max_new[i])

    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="w1-client")
    t = time.perf_counter()
    futures = [pool.submit(one, i) for i in range(len(texts))]
    done, running = wait(futures, timeout=max(deadline - time.time(), 1))
    secs = time.perf_counter() - t
    pool.shutdown(wait=False, cancel_futures=True)
    answered = [f.result() for f in futures if f in done and f.exception() is None]
    failed = [repr(f.exception()) for f in futures if f in done and f.exception() is not None]
    out = sum(g for _, g in answered)
    res = {"seconds": secs, "requests": len(texts), "answered": len(answered), "failed": len(failed),
           "unfinished_at_deadline": len(running), "cut": bool(running), "output_tokens": out,
           "output_tokens_per_s": out / secs, "requested_output_tokens": sum(max_new),
           "concurrency": concurrency, "first_failures": failed[:3]}
    if prompt_lens is not None:  # the text must have reached the engine as the intended ids
        lens = [f.result()[0] for f in futures if f in done and f.exception() is None]
        want = [n for f, n in zip(futures, prompt_lens) if f in done and f.exception() is None]
        res["prompt_length_mismatches"] = sum(a != b for a, b in zip(lens, want))
    if failed and not answered:
        raise RuntimeError(f"every request failed, e.g. {failed[0]}")
    return res


def end_deployment(client, name, ph):
    """terminate_server(); if serve() never returned a client, the router (own session) is killed by its record."""
    try:
        if client is not None:
            client.terminate_server(timeout=30)
            return
        from mii_core.serving.metadata import read_record
        record = read_record(name)
        if record is not None and record.router_pid:
            os.killpg(record.router_pid, signal.SIGKILL)
    except Exception as e:  # noqa: BLE001 - ending is best effort; say what was left
        ph.part["errors"][f"{name}.terminate"] = f"{type(e).__name__}: {e}"
        ph.save()
