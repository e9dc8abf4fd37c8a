"""What a streamed token costs between the engine and the socket (issue 21, part 2), on the CPU.

    .venv/bin/python benchmarks/profile_serving_path.py [--requests 128] [--new-tokens 96] [--out FILE.json]

1. Each stage of a token's way alone, in microseconds per token: the loop thread's post (RequestStream's
   queue), the consumer's detokenisation (IncrementalDecoder.push), its Response (piece_response), the
   wire message (response_to_wire + msgpack) and the link's send + receive (a connection pair).
2. The engine with N requests at once, three ways: the pipeline's generate_tokens (no front end); through
   the replica's link server (LocalBackend + LinkServer, as run_replica serves them) with the callers in
   another process (as the router is), streamed text, then token counts only. For each: output tok/s, and
   the engine loop thread's CPU seconds (from /proc) against the wall time: the loop thread shares the
   replica's GIL with one link thread per request, so what they do per token can hold the engine up.
The toy llama (benchmarks/checkpoint.py TINY, float32) keeps steps short, so front-end costs show.
"""

import argparse
import json
import multiprocessing
import os
import queue
import secrets
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Pipe

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checkpoint  # noqa: E402

LOOP_THREAD = "mii-core-engine"  # EngineService's default thread name


def per_token_us(fn, repeats):
    t = time.perf_counter()
    for i in range(repeats):
        fn(i)
    return (time.perf_counter() - t) / repeats * 1e6


def stage_costs(tokenizer, repeats=20000):
    """Microseconds per token of each stage, measured alone (one thread, no contention)."""
    from mii_core.response import Response
    from mii_core.serving import wire
    from mii_core.serving.detokenize import IncrementalDecoder
    from mii_core.serving.responses import piece_response
    from mii_core.serving.stream import StreamChunk
    events = queue.SimpleQueue()
    decoder = IncrementalDecoder(tokenizer)
    prompt = list(range(1200))
    response = Response("t7 ", 1200, 5, "none")
    message = wire.encode(["chunk", 0, wire.response_to_wire(response)])
    a, b = Pipe()
    return {
        "loop_post_and_consumer_get": per_token_us(lambda i: (events.put(("tokens", 0, i)), events.get()), repeats),
        "detokenize": per_token_us(lambda i: decoder.push([i % 500]), repeats),
        "piece_response": per_token_us(lambda i: piece_response(tokenizer, "t7 ", prompt,
                                                                StreamChunk(0, "t7 ", i, "none")), repeats),
        "wire_encode": per_token_us(lambda i: wire.encode(["chunk", 0, wire.response_to_wire(response)]), repeats),
        "link_send_receive": per_token_us(lambda i: (a.send_bytes(message), b.recv_bytes()), repeats),
        "wire_decode": per_token_us(lambda i: wire.response_from_wire(wire.decode(message)[2]), repeats),
    }


def thread_cpu_s(native_id):
    """utime + stime of one thread of this process, from /proc (Linux)."""
    with open(f"/proc/self/task/{native_id}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loop_thread_id():
    return next(t.native_id for t in threading.enumerate() if t.name == LOOP_THREAD)


def measured(run, tokens):
    """run() timed: wall seconds, output tok/s, the loop thread's CPU seconds and its share of the wall, and
    the messages the callers received per token (where run returns their count)."""
    tid = loop_thread_id()
    cpu0, t0 = thread_cpu_s(tid), time.perf_counter()
    messages = run()
    wall, cpu = time.perf_counter() - t0, thread_cpu_s(tid) - cpu0
    out = {"wall_s": wall, "output_tokens_per_s": tokens / wall, "loop_thread_cpu_s": cpu,
           "loop_thread_cpu_share": cpu / wall}
    if isinstance(messages, int):
        out["messages_per_token"] = messages / tokens
    return out


def medians(rows):
    """Per figure the median over repeats (the machine is shared: single runs vary by tens of percent)."""
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}


def callers(address, authkey, prompts, new_tokens, stream):
    """In another process (the router's place): every request from its own thread over the link, drained."""
    from mii_core.serving.backend import GenerateRequest
    from mii_core.serving.link import RemoteBackend
    backend = RemoteBackend(address, authkey)
    options = {"max_new_tokens": new_tokens, "ignore_eos": True, "do_sample": False}

    def one(ids):
        events = backend.submit(GenerateRequest(prompt_ids=[ids], options=options, stream=stream)).events()
        return sum(1 for _ in events)
    with ThreadPoolExecutor(len(prompts)) as pool:
        return sum(pool.map(one, prompts))


def through_link(pipe, prompts, new_tokens, stream):
    from mii_core.serving.link import LinkServer, backend_handler
    from mii_core.serving.replica import LocalBackend
    authkey = secrets.token_bytes(32)
    server = LinkServer("127.0.0.1", 0, authkey, backend_handler(LocalBackend(pipe)), name="profile").start()
    ctx = multiprocessing.get_context("spawn")
    try:
        with ctx.Pool(1) as pool:
            pool.apply(callers, (server.address, authkey, prompts[:1], 2, stream))  # connect once, warm
            return measured(lambda: pool.apply(callers, (server.address, authkey, prompts, new_tokens, stream)),
                            len(prompts) * new_tokens)
    finally:
        server.close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=96)
    p.add_argument("--ckpt", default="/tmp/llama-tiny-random")
    p.add_argument("--repeats", type=int, default=3, help="each way this many times, interleaved; medians")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import random

    import mii_core
    checkpoint.build_checkpoint(args.ckpt, tiny=True)
    pipe = mii_core.pipeline(args.ckpt)
    rng = random.Random(0)
    prompts = [[rng.randrange(500) for _ in range(16)] for _ in range(args.requests)]
    res = {"requests": args.requests, "new_tokens": args.new_tokens, "stages_us": stage_costs(pipe.tokenizer)}
    pipe.generate_tokens(prompts[:2], max_new_tokens=2)  # warm
    ways = {"pipeline": lambda: measured(lambda: pipe.generate_tokens(prompts, max_new_tokens=args.new_tokens,
                                                                      ignore_eos=True), len(prompts) * args.new_tokens),
            "link_streamed_text": lambda: through_link(pipe, prompts, args.new_tokens, True),
            "link_token_counts": lambda: through_link(pipe, prompts, args.new_tokens, False)}
    rows = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, way in ways.items():
            rows[name].append(way())
    res.update({name: medians(runs) for name, runs in rows.items()})
    for name in ("link_streamed_text", "link_token_counts"):
        res[name]["share_of_pipeline"] = res[name]["output_tokens_per_s"] / res["pipeline"]["output_tokens_per_s"]
    print(json.dumps(res, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
    pipe.stop_service()


if __name__ == "__main__":
    main()
