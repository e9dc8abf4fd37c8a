"""The load generator: sends a run's requests at their arrival times from a process of its own and keeps every
request's timestamps (send, each token-bearing chunk, end) and token counts.

HTTP goes through the `openai` async client (httpx, or httpx2 from openai 3) to /v1/completions, streaming with
stream_options.include_usage; gRPC through the deployment's own generated stub (mii_server_grpc) with
grpc.aio. A target is a plain dict so that it crosses the process boundary:
    {"kind": "openai" | "grpc", "address": base URL or host:port, "model": name, "style": "mii" | "hf"}
style "hf" is `transformers serve`: text prompts (it takes no token ids) and EOS barred through its
generation_config field (it has no ignore_eos).
"""

import asyncio
import json
import multiprocessing
import queue
import threading
import time
import traceback

CLIENT_TIMEOUT_S = 3600.0
READY_TIMEOUT_S = 120.0  # a client process's start: spawn, imports (openai or grpc), its client built
START_MARGIN_S = 0.5  # from the last client process's readiness to the run's first arrival


def as_text(ids):
    """The benchmark tokenizer maps the word 't<i>' to id i (checkpoint._save_tokenizer): exact round trip."""
    return " ".join(f"t{i}" for i in ids)


def openai_arguments(target, request):
    """Keyword arguments of completions.create for one request."""
    args = dict(model=target["model"], max_tokens=request.max_tokens, stream=True, temperature=0.0,
                stream_options={"include_usage": True})
    if target["style"] == "hf":
        exact = {"max_new_tokens": request.max_tokens, "min_new_tokens": request.max_tokens, "do_sample": False}
        return dict(args, prompt=as_text(request.prompt_ids), extra_body={"generation_config": json.dumps(exact)})
    return dict(args, prompt=request.prompt_ids, extra_body={"ignore_eos": True})


async def openai_one(client, target, request, record):
    stream = await client.completions.create(**openai_arguments(target, request))
    async for chunk in stream:
        now = time.perf_counter()
        if chunk.choices and chunk.choices[0].text:
            record["token_times"].append(now)
        if chunk.usage is not None:
            record["prompt_tokens"] = chunk.usage.prompt_tokens
            record["output_tokens"] = chunk.usage.completion_tokens


async def grpc_one(stub, target, request, record):
    from mii_server_grpc.convert import make_request
    message = make_request([as_text(request.prompt_ids)], max_new_tokens=request.max_tokens, ignore_eos=True,
                           do_sample=False)
    async for reply in stub.GeneratorReplyStream(message):
        now = time.perf_counter()
        piece = reply.response[0]
        if piece.response:
            record["token_times"].append(now)
        record["prompt_tokens"], record["output_tokens"] = piece.prompt_tokens, piece.generated_tokens


async def timed(send_one, request, t0):
    """Waits for the request's arrival time, sends it, and returns its record (an error ends it, never the run)."""
    await asyncio.sleep(max(t0 + request.at_s - time.perf_counter(), 0))
    sent = len(request.prompt_ids)  # prompt_tokens is then the server's count (its usage)
    record = {"send": time.perf_counter(), "token_times": [], "sent_prompt_tokens": sent, "prompt_tokens": sent,
              "max_tokens": request.max_tokens, "output_tokens": 0, "error": None}
    try:
        await send_one(request, record)
    except Exception as e:  # noqa: BLE001 - one failed request is a data point, not the end of the run
        record["error"] = f"{type(e).__name__}: {e}"[:300]
    record["end"] = time.perf_counter()
    record["first"] = record["token_times"][0] if record["token_times"] else None
    if not record["error"] and record["first"] is None:
        record["error"] = "no token arrived"
    return record


async def drive(target, requests, deadline_s, start, report=None):
    """All requests at their times counted from ``start()`` (a perf_counter instant, awaited once the client is
    built); those unfinished deadline_s after it end as 'unfinished'. ``report(run)`` gets the run before the
    client closes: closing a client with cancelled streams once outlasted a whole device call (the H200's
    transformers serve at 512x512, 2026-12-03), and the run's records must not wait on it."""
    async with connect(target) as send_one:
        t0 = await asyncio.get_running_loop().run_in_executor(None, start)
        tasks = [asyncio.ensure_future(timed(send_one, r, t0)) for r in requests]
        done, pending = await asyncio.wait(tasks, timeout=max(t0 + deadline_s - time.perf_counter(), 0))
        for task in pending:
            task.cancel()
        run = {"t0": t0, "records": [task.result() if task in done else unfinished(request, t0)
                                     for task, request in zip(tasks, requests)]}
        if report is not None:
            report(run)
    return run


def unfinished(request, t0):
    """The record of a request still running at the run's deadline."""
    sent = len(request.prompt_ids)
    return {"send": t0 + request.at_s, "first": None, "end": None, "token_times": [], "sent_prompt_tokens": sent,
            "prompt_tokens": sent, "max_tokens": request.max_tokens, "output_tokens": 0,
            "error": "unfinished at the run's deadline"}


class connect:
    """async with connect(target) as send_one: one client (HTTP connection pool or gRPC channel) for the run."""

    def __init__(self, target):
        self.target, self.close = target, None

    async def __aenter__(self):
        if self.target["kind"] == "openai":
            import openai  # its own pooled HTTP client (1000 connections): more than any run keeps open
            client = openai.AsyncOpenAI(base_url=self.target["address"], api_key="unused", max_retries=0,
                                        timeout=CLIENT_TIMEOUT_S)
            self.close = client.close
            return lambda request, record: openai_one(client, self.target, request, record)
        import grpc
        from mii_server_grpc.proto import modelresponse_pb2_grpc as pb_grpc
        channel = grpc.aio.insecure_channel(self.target["address"])
        self.close = channel.close
        stub = pb_grpc.ModelResponseStub(channel)
        return lambda request, record: grpc_one(stub, self.target, request, record)

    async def __aexit__(self, *exc):
        await self.close()


def run_load(target, requests, deadline_s, processes=1):
    """Runs the requests against target from ``processes`` fresh client processes (each its own event loop and
    GIL, apart from the servers and from the caller; request i goes to process i mod processes), all starting
    at one instant once every one is ready. Returns {"t0", "records" (in the requests' order), "client_cpu_s"
    (each process's CPU seconds while it drove its requests)}: a client process near one CPU second per second
    of the run bounded the figures itself (the openai client parses and validates every streamed chunk)."""
    processes = max(1, min(processes, len(requests)))
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Barrier(processes + 1), context.Barrier(processes + 1), context.Queue()
    t0 = context.Value("d", 0.0)
    shards = [requests[i::processes] for i in range(processes)]
    children = [context.Process(target=_client, args=(target, shard, deadline_s, i, ready, go, t0, results),
                                daemon=True) for i, shard in enumerate(shards)]
    for child in children:
        child.start()
    try:
        try:
            ready.wait(READY_TIMEOUT_S)
            t0.value = time.perf_counter() + START_MARGIN_S
            go.wait(READY_TIMEOUT_S)
        except threading.BrokenBarrierError:  # a client process failed before the start (it says why) or hung
            _collect(results, processes, 5.0)
            raise TimeoutError(f"the client processes were not all ready within {READY_TIMEOUT_S:g} s") from None
        parts = _collect(results, processes, deadline_s + READY_TIMEOUT_S)
    finally:
        for child in children:
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
    return {"t0": t0.value, "records": interleaved([parts[i]["records"] for i in range(processes)]),
            "client_cpu_s": [parts[i]["cpu_s"] for i in range(processes)]}


def interleaved(shards):
    """The inverse of dealing items round-robin into ``shards`` (item i into shard i mod len(shards))."""
    items = [None] * sum(len(shard) for shard in shards)
    for i, shard in enumerate(shards):
        items[i::len(shards)] = shard
    return items


def _collect(results, count, timeout_s):
    """Each client process's part, by its index; a process that failed raises its error here."""
    parts, deadline = {}, time.monotonic() + timeout_s
    while len(parts) < count:
        try:
            index, part, error = results.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise TimeoutError(f"{count - len(parts)} of {count} client processes gave no result in time") from None
        if error is not None:
            raise RuntimeError(f"client process {index} failed:\n{error}")
        parts[index] = part
    return parts


def _client(target, requests, deadline_s, index, ready, go, t0, results):
    """One client process: builds its client, waits for the others, drives its share of the requests and
    reports them as soon as the deadline passes (the parent kills a process whose client then will not close)."""
    cpu_at_start, reported = [], []

    def start():
        ready.wait(READY_TIMEOUT_S)
        go.wait(READY_TIMEOUT_S)
        cpu_at_start.append(time.process_time())  # the imports and the client's set-up are not the run's
        return t0.value

    def report(run):
        results.put((index, {"records": run["records"], "cpu_s": time.process_time() - cpu_at_start[0]}, None))
        reported.append(True)
    try:
        asyncio.run(drive(target, requests, deadline_s, start, report))
    except BaseException:  # noqa: BLE001 - the parent hears of any failure rather than waiting for it
        if reported:  # the run is in; what failed was closing the client
            traceback.print_exc()
            return
        ready.abort()  # the others (and the parent) stop waiting for this one
        go.abort()
        results.put((index, None, traceback.format_exc()))
