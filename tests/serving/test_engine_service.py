"""The engine service behind the pipeline: many threads, streaming, continuous batching, cancel, faults."""

import threading
import time

import pytest

from mii_core.serving.errors import QueueFull, RequestCancelled
from support.compare import assert_responses_match
from support.prompts import MIXED_PROMPTS

GREEDY = dict(do_sample=False, ignore_eos=True)
LONG = dict(do_sample=False, ignore_eos=True, max_new_tokens=400)  # runs long enough to act on mid-way


@pytest.fixture(scope="module")
def gqa(checkpoint, oracle, pipeline):
    path = checkpoint("gqa")
    return pipeline(path), oracle(path), path


def wait_until(condition, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def all_blocks_free(pipe):
    return pipe.engine.free_blocks == pipe.engine.scheduler.kv.num_blocks and not pipe.loop.scheduler.has_work()


def test_eight_threads_on_one_pipeline_each_get_their_serial_output(gqa):
    pipe, hf, _ = gqa
    # Each thread asks for different prompts and lengths, greedy and seeded sampling mixed.
    jobs = [(MIXED_PROMPTS[i % 6:i % 6 + 3], 6 + i * 3) for i in range(8)]
    sampled = dict(do_sample=True, top_k=20, seed=11, max_new_tokens=12)
    serial_sampled = pipe(MIXED_PROMPTS, **sampled)
    results, errors = {}, []

    def work(i, prompts, new_tokens):
        try:
            for _ in range(3):
                results[i] = (pipe(prompts, max_new_tokens=new_tokens, **GREEDY), pipe(MIXED_PROMPTS, **sampled))
        except Exception as exc:  # reported below; an assert here would vanish with the thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, *job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for i, (prompts, new_tokens) in enumerate(jobs):
        greedy, sampled_out = results[i]
        assert_responses_match(greedy, [hf.greedy(p, new_tokens, ignore_eos=True) for p in prompts])
        assert sampled_out == serial_sampled
    assert all_blocks_free(pipe)


def split_by_prompt(chunks, count):
    texts, finish, index = [""] * count, [None] * count, 0
    for chunk in chunks:
        assert index < count, "pieces after the last prompt finished"
        texts[index] += chunk.generated_text
        if chunk.finish_reason != "none":
            finish[index] = chunk.finish_reason
            index += 1
    return texts, finish


@pytest.mark.parametrize("options", [
    dict(max_new_tokens=30),
    dict(max_new_tokens=30, stop=[" the", "ea"]),
    dict(max_new_tokens=30, return_full_text=True),
    dict(max_new_tokens=30, stop="e", min_new_tokens=5),
], ids=["plain", "stop-list", "full-text", "stop+min_new_tokens"])
def test_stream_pieces_add_up_to_the_unstreamed_responses(gqa, options):
    pipe, _, _ = gqa
    prompts = MIXED_PROMPTS[:4]
    whole = pipe(prompts, do_sample=False, **options)
    chunks = list(pipe(prompts, do_sample=False, stream=True, **options))
    texts, finish = split_by_prompt(chunks, len(prompts))
    assert texts == [r.generated_text for r in whole]
    assert finish == [r.finish_reason for r in whole]
    last_of_each = [c for c in chunks if c.finish_reason != "none"]
    assert [(c.prompt_length, c.generated_length) for c in last_of_each] == \
        [(r.prompt_length, r.generated_length) for r in whole]
    if not options.get("min_new_tokens"):  # with min_new_tokens and stop strings text waits for the end
        assert len(chunks) > 2 * len(prompts), "the text must come in pieces, not whole"


def test_stream_intermediate_pieces_say_none(gqa):
    pipe, hf, _ = gqa
    chunks = list(pipe("The old man", stream=True, max_new_tokens=12, **GREEDY))
    assert [c.finish_reason for c in chunks] == ["none"] * (len(chunks) - 1) + ["length"]
    assert "".join(c.generated_text for c in chunks) == hf.greedy("The old man", 12, ignore_eos=True).text


def test_a_request_joins_the_batch_while_another_runs(gqa):
    pipe, hf, _ = gqa
    long_request = pipe.submit(["river"], pipe_options(LONG))
    first_piece(long_request)
    short = pipe("The old man", max_new_tokens=5, **GREEDY)
    assert not long_request.done, "the short request waited for the long one to finish"
    assert_responses_match(short, [hf.greedy("The old man", 5, ignore_eos=True)])
    long_request.cancel()
    wait_until(lambda: all_blocks_free(pipe), what="blocks freed")


def first_piece(request):
    return next(iter(request.chunks()))


def pipe_options(options):
    from mii_core.requests import generation_options

    return generation_options(options)


def test_cancel_frees_the_sequence_and_its_blocks_at_the_next_step(gqa):
    pipe, hf, _ = gqa
    request = pipe.submit([MIXED_PROMPTS[5]], pipe_options(LONG))
    pieces = request.chunks()
    first = [next(pieces) for _ in range(3)]
    assert all(c.finish_reason == "none" for c in first)
    assert pipe.engine.free_blocks < pipe.engine.scheduler.kv.allocator.num_blocks, "a running sequence holds blocks"
    request.cancel()
    with pytest.raises(RequestCancelled):
        list(pieces)
    wait_until(lambda: all_blocks_free(pipe), what="the cancelled sequence's blocks to be freed")
    assert request.seqs[0].finish_reason == "cancelled"
    assert len(request.seqs[0].generated_ids) < LONG["max_new_tokens"]
    assert_responses_match(pipe("river", max_new_tokens=8, **GREEDY), [hf.greedy("river", 8, ignore_eos=True)])


def test_stopping_to_read_a_stream_cancels_it(gqa):
    pipe, _, _ = gqa
    stream = pipe("river", stream=True, **LONG)
    next(stream)
    stream.close()  # what a `break` out of the loop does to the generator
    wait_until(lambda: all_blocks_free(pipe), what="the abandoned stream's blocks to be freed")


def test_an_error_inside_a_step_fails_that_steps_requests_and_the_loop_goes_on(checkpoint, oracle, pipeline, monkeypatch):
    path = checkpoint("gqa")
    hf = oracle(path)
    # One sequence per step, so the faulty step holds exactly the doomed request.
    pipe = pipeline(path, inference_engine_config={"state_manager": {"max_ragged_sequence_count": 1}})
    doomed_ids = hf.encode("The old man")
    real_run = pipe.engine.runner.run

    def faulty_run(plan, *args, **kwargs):
        if any(list(tokens) == doomed_ids for tokens in plan.token_lists):
            raise RuntimeError("injected fault in the forward pass")
        return real_run(plan, *args, **kwargs)

    monkeypatch.setattr(pipe.engine.runner, "run", faulty_run)
    outcome = {}

    def run(name, prompt):
        try:
            outcome[name] = pipe(prompt, max_new_tokens=10, **GREEDY)
        except Exception as exc:
            outcome[name] = exc

    threads = [threading.Thread(target=run, args=args) for args in (("doomed", "The old man"), ("other", "river"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert isinstance(outcome["doomed"], RuntimeError) and "injected fault" in str(outcome["doomed"])
    assert_responses_match(outcome["other"], [hf.greedy("river", 10, ignore_eos=True)])
    wait_until(lambda: all_blocks_free(pipe), what="the failed step's blocks to be freed")
    monkeypatch.undo()
    assert_responses_match(pipe("The old man", max_new_tokens=10, **GREEDY),
                           [hf.greedy("The old man", 10, ignore_eos=True)])


def test_the_queue_of_unstarted_requests_is_bounded(checkpoint, pipeline):
    path = checkpoint("gqa")
    # One sequence in the engine at a time: the second request waits, the third finds the queue full.
    pipe = pipeline(path, inference_engine_config={"state_manager": {"max_tracked_sequences": 1}})
    pipe.service.max_queued_requests = 1
    running = pipe.submit(["river"], pipe_options(LONG))
    first_piece(running)
    waiting = pipe.submit(["The old man"], pipe_options(dict(max_new_tokens=4, **GREEDY)))
    with pytest.raises(QueueFull, match="max_queued_requests=1"):
        pipe.submit(["river"], pipe_options(dict(max_new_tokens=4, **GREEDY)))
    running.cancel()
    assert waiting.result(timeout=30)[0].finish_reason == "length"
    pipe.service.max_queued_requests = None


def test_a_request_whose_sampling_fails_fails_alone_and_its_batch_goes_on(checkpoint, oracle, pipeline, monkeypatch):
    """Issue 22, row 2: an exception while preparing one request's part of a step (here its sampling)
    fails that request; the others in the same steps keep their greedy text, and the engine serves on."""
    path = checkpoint("gqa")
    hf = oracle(path)
    pipe = pipeline(path)
    doomed_ids = hf.encode("The old man")
    real_sampler = pipe.loop.sampler

    class FailsForTheDoomed:
        def __call__(self, logits, seqs):
            if any(list(seq.prompt_ids) == doomed_ids for seq in seqs):
                raise RuntimeError("injected fault in one request's sampling")
            return real_sampler(logits, seqs)

        def all_greedy(self, seqs, unread=0):
            return real_sampler.all_greedy(seqs, unread)

        def logprobs(self, logits, seqs, tokens):
            return real_sampler.logprobs(logits, seqs, tokens)

    monkeypatch.setattr(pipe.loop, "sampler", FailsForTheDoomed())
    outcome, gate = {}, threading.Barrier(3)

    def run(name, prompts, new_tokens):
        gate.wait()
        try:
            outcome[name] = pipe(prompts, max_new_tokens=new_tokens, **GREEDY)
        except Exception as exc:
            outcome[name] = exc

    victims = ["river", "Hello, my name is"]
    threads = [threading.Thread(target=run, args=args) for args in
               (("doomed", ["The old man"], 10), ("victims", victims, 30))]
    for t in threads:
        t.start()
    gate.wait()
    for t in threads:
        t.join(timeout=60)
    assert isinstance(outcome["doomed"], RuntimeError) and "injected fault" in str(outcome["doomed"])
    assert_responses_match(outcome["victims"], [hf.greedy(p, 30, ignore_eos=True) for p in victims])
    wait_until(lambda: all_blocks_free(pipe), what="the failed request's blocks to be freed")
    monkeypatch.undo()
    assert_responses_match(pipe("The old man", max_new_tokens=10, **GREEDY),
                           [hf.greedy("The old man", 10, ignore_eos=True)])
