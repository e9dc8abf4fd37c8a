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
import time

from w5.children import in_child

CLIENT_TIMEOUT_S = 3600.0


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


async def drive(target, requests, deadline_s):
    """All requests at their times; those unfinished deadline_s after the start end as 'unfinished'."""
    t0 = time.perf_counter()
    async with connect(target) as send_one:
        tasks = [asyncio.ensure_future(timed(send_one, r, t0)) for r in requests]
        done, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for task in pending:
            task.cancel()
    records = []
    for task, request in zip(tasks, requests):
        if task in done:
            records.append(task.result())
        else:
            sent = len(request.prompt_ids)
            records.append({"send": t0 + request.at_s, "first": None, "end": None, "token_times": [],
                            "sent_prompt_tokens": sent, "prompt_tokens": sent, "max_tokens": request.max_tokens,
                            "output_tokens": 0, "error": "unfinished at the run's deadline"})
    return {"t0": t0, "records": records}


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


def _run(target, requests, deadline_s):
    return asyncio.run(drive(target, requests, deadline_s))


def run_load(target, requests, deadline_s):
    """Runs the requests against target in a fresh process (its own event loop and GIL, apart from the
    servers and from the caller); returns {"t0", "records"}."""
    return in_child(deadline_s + 120, _run, target, requests, deadline_s)
