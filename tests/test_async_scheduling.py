"""Async scheduling: decode step n+1 is launched fed with step n's tokens still on the device, before the
host reads them. Output must equal HF's token for token, and the overlapped path must really run."""

import math

import pytest
import torch

from mii_core.requests import generation_options
from support.compare import assert_responses_match
from support.prompts import MIXED_PROMPTS

NEW_TOKENS = 20
BLOCK_SIZE = 4
EOS_PROMPTS = ["five years they gave", "the sea,", "They built", "The old man", "river", "cook soup"]
ASYNC = {"async_scheduling": True}


def _config(**state_manager):
    return {"inference_engine_config": {**ASYNC, "state_manager": state_manager}}


def _schedule(name, oracle, path):
    if name == "whole":
        return _config()
    if name == "chunked":  # prompts go in 8-token chunks, beside the other sequences' decodes
        return _config(max_ragged_batch_size=8, max_ragged_sequence_count=8)
    longest = max(len(oracle(path).encode(p)) for p in MIXED_PROMPTS)
    blocks = math.ceil((longest + NEW_TOKENS) / BLOCK_SIZE) * 3 // 2  # the batch does not fit at once
    return _config(kv_block_size=BLOCK_SIZE, memory_config={"mode": "allocate", "size": blocks})


@pytest.mark.parametrize("schedule", ["whole", "chunked", "preempted"])
def test_overlapped_greedy_matches_hf(checkpoint, oracle, pipeline, schedule):
    path = checkpoint("gqa")
    references = [oracle(path).greedy(p, NEW_TOKENS, ignore_eos=True) for p in MIXED_PROMPTS]
    pipe = pipeline(path, **_schedule(schedule, oracle, path))
    ahead, preempted = pipe.loop.num_steps_ahead, pipe.loop.scheduler.num_preemptions
    responses = pipe(MIXED_PROMPTS, do_sample=False, max_new_tokens=NEW_TOKENS, ignore_eos=True)
    assert_responses_match(responses, references)
    assert pipe.loop.num_steps_ahead - ahead >= NEW_TOKENS // 2, "the overlapped path must carry most steps"
    if schedule == "preempted":
        assert pipe.loop.scheduler.num_preemptions > preempted
    assert not pipe.engine.scheduler.kv.sequences, "finished sequences must leave no KV state behind"


@pytest.mark.parametrize("min_new_tokens", [0, 2])
def test_eos_and_min_new_tokens_like_hf(checkpoint, oracle, pipeline, min_new_tokens):
    """EOS found one step late: the row fed ahead is dropped; EOS barred below min_new_tokens is argmax's
    business only once the bar is lifted for every sequence."""
    path = checkpoint("gqa")
    references = [oracle(path).greedy(p, 24, min_new_tokens=min_new_tokens) for p in EOS_PROMPTS]
    assert {g.finish_reason for g in references} == {"stop", "length"}, "fixture must mix both endings"
    pipe = pipeline(path, **_config())
    ahead = pipe.loop.num_steps_ahead
    responses = pipe(EOS_PROMPTS, do_sample=False, max_new_tokens=24, min_new_tokens=min_new_tokens)
    assert_responses_match(responses, references)
    assert pipe.loop.num_steps_ahead > ahead
    assert not pipe.engine.scheduler.kv.sequences, "finished sequences must leave no KV state behind"


def test_tokens_committed_ahead_serve_the_prefix_cache(checkpoint, oracle, pipeline):
    """Generated tokens enter the cache's block keys when they are read: a later prompt made of the
    first prompt and its output reuses those blocks and still continues exactly as HF does."""
    path = checkpoint("gqa")
    hf = oracle(path)
    pipe = pipeline(path, **_config(kv_block_size=BLOCK_SIZE))
    first = hf.encode(MIXED_PROMPTS[5])
    generated = pipe.generate_tokens([first], max_new_tokens=NEW_TOKENS, do_sample=False, ignore_eos=True)[0]
    longer = first + list(generated.token_ids)
    hits = pipe.engine.scheduler.kv.prefix_cache.hit_blocks
    got = pipe.generate_tokens([longer], max_new_tokens=8, do_sample=False, ignore_eos=True)[0]
    assert pipe.engine.scheduler.kv.prefix_cache.hit_blocks - hits >= (len(longer) - 1) // BLOCK_SIZE - 1
    with torch.no_grad():
        expected = hf.model.generate(torch.tensor([longer]), do_sample=False, max_new_tokens=8,
                                     eos_token_id=None)[0, len(longer):].tolist()
    assert list(got.token_ids) == expected


def test_a_request_cancelled_while_a_step_is_in_flight_frees_everything(checkpoint, oracle, pipeline):
    path = checkpoint("gqa")
    references = [oracle(path).greedy(p, NEW_TOKENS, ignore_eos=True) for p in MIXED_PROMPTS[:2]]
    pipe = pipeline(path, **_config())
    options = generation_options({"do_sample": False, "max_new_tokens": 200, "ignore_eos": True})
    doomed = pipe.submit([MIXED_PROMPTS[3]], options)
    kept = pipe.submit(MIXED_PROMPTS[:2], generation_options(
        {"do_sample": False, "max_new_tokens": NEW_TOKENS, "ignore_eos": True}))
    chunks = doomed.chunks()
    for _ in range(5):
        next(chunks)
    doomed.cancel()
    outputs = kept.result()
    assert [list(o.token_ids) for o in outputs] == [list(g.new_ids) for g in references]
    pipe(MIXED_PROMPTS[:1], do_sample=False, max_new_tokens=2)  # the loop still serves after the cancel
    assert not pipe.engine.scheduler.kv.sequences


def test_async_scheduling_is_off_by_default_on_cpu(checkpoint, pipeline):
    """Unset, it follows the device: on for one GPU, off on CPU (where the host is the device)."""
    assert pipeline(checkpoint("gqa")).loop.overlap is False
    assert pipeline(checkpoint("gqa"), **_config()).loop.overlap is True


def test_a_request_arriving_while_steps_run_ahead_joins_the_batch(checkpoint, oracle):
    """A new request waits while a step is in flight: the loop reads that step's tokens, plans the new
    prompts beside the running decode, and goes ahead again once every sequence decodes. Driven step by
    step (the engine service stopped) so that the arrival surely lands while a step runs ahead."""
    import mii_core
    from mii_core.requests import build_sequence

    path = checkpoint("gqa")
    hf = oracle(path)
    references = [hf.greedy(p, NEW_TOKENS, ignore_eos=True) for p in MIXED_PROMPTS[:3]]
    pipe = mii_core.pipeline(str(path), inference_engine_config=ASYNC)
    try:
        pipe.service.close()  # this test's thread drives the loop itself
        greedy = generation_options({"do_sample": False, "max_new_tokens": NEW_TOKENS, "ignore_eos": True})
        seqs = [build_sequence(900 + i, hf.encode(p), NEW_TOKENS, greedy, pipe.engine.device)
                for i, p in enumerate(MIXED_PROMPTS[:3])]
        loop = pipe.loop
        loop.add(seqs[0])
        while loop.num_steps_ahead < 3:
            loop.step()
        assert len(seqs[0].generated_ids) < NEW_TOKENS, "the first request must still be running"
        ahead = loop.num_steps_ahead
        loop.add(seqs[1])
        loop.add(seqs[2])
        loop.step()  # reads the step in flight
        loop.step()
        assert seqs[1].num_computed > 0 and len(seqs[0].generated_ids) < NEW_TOKENS, \
            "the new prompts must go in beside the running decode, not after it"
        while loop.scheduler.has_work():
            loop.step()
        assert [s.generated_ids for s in seqs] == [list(g.new_ids) for g in references]
        assert loop.num_steps_ahead > ahead, "once the new prompts are in, the loop goes ahead again"
    finally:
        pipe.destroy()


def test_seeded_sampling_is_unchanged_by_async_scheduling(checkpoint, pipeline):
    """A sampled row keeps the whole batch on the plain path (its draw needs the host), so the same seed
    gives the same text with the option on or off, greedy rows beside it included."""
    path = checkpoint("gqa")
    sampled = {"do_sample": True, "seed": 77, "top_p": 0.9, "max_new_tokens": NEW_TOKENS, "ignore_eos": True}
    texts = {}
    for overlap in (False, True):
        pipe = pipeline(path, inference_engine_config={"async_scheduling": overlap})
        texts[overlap] = [r.generated_text for r in pipe(MIXED_PROMPTS[:3], **sampled)]
    assert texts[True] == texts[False]


def test_a_watched_stream_is_woken_once_the_next_step_is_launched(checkpoint, pipeline, monkeypatch):
    """A replica's stream pump takes the GIL when woken: while a step launched ahead computes, the loop posts
    the step before's tokens and then plans and launches the next step, so the wake waits for that launch
    (the loop's wait on the device), not for the post. Every wake after a post made with a step in flight
    comes after a launch; where no step is in flight (the first tokens) it comes at once."""
    import threading

    pipe = pipeline(checkpoint("gqa"), **_config())
    trace, lock = [], threading.Lock()
    run = pipe.loop.runner.run

    def launching(*args, **kwargs):
        with lock:
            trace.append(("launch",))
        return run(*args, **kwargs)

    monkeypatch.setattr(pipe.loop.runner, "run", launching)
    options = generation_options({"do_sample": False, "max_new_tokens": NEW_TOKENS, "ignore_eos": True})
    request = pipe.submit(["river"], options)
    post = request.post_tokens

    def posting(index, count):
        with lock:
            trace.append(("post", pipe.loop.step_in_flight))
        post(index, count)

    monkeypatch.setattr(request, "post_tokens", posting)
    request.watch(lambda: trace.append(("wake",)))
    request.result()
    posts = [i for i, event in enumerate(trace) if event[0] == "post"]
    held = [i for i in posts if trace[i][1]]
    assert len(held) >= NEW_TOKENS // 2, "most posts must come with a step in flight (the overlapped path)"
    for i in held[:-1]:  # after the last tokens the loop launches nothing: their wake comes once it read the step
        wake = next(j for j in range(i + 1, len(trace)) if trace[j][0] == "wake")
        assert ("launch",) in trace[i + 1:wake], f"the wake after post {i} came before the next launch: {trace}"
