"""vLLM's sampling fields through the pipeline, greedy, against HF transformers' generate on the same tiny
Llama: repetition_penalty as HF's own, presence/frequency through a PyTorch reference of OpenAI's formula
handed to HF's generate, logit_bias as HF's sequence_bias; and the overlapped (async) decode step never
skips a penalty."""
from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from support.prompts import MIXED_PROMPTS

NEW_TOKENS = 16
ASYNC = {"inference_engine_config": {"async_scheduling": True}}


class OpenAIPenalties(LogitsProcessor):
    """OpenAI's presence/frequency formula over the generated tokens (after ``prompt_len``), for HF."""

    def __init__(self, prompt_len: int, presence: float, frequency: float) -> None:
        self.prompt_len, self.presence, self.frequency = prompt_len, presence, frequency

    def __call__(self, input_ids, scores):
        counts = torch.zeros_like(scores)
        generated = input_ids[:, self.prompt_len:]
        counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


def hf_greedy(hf, ids: list[int], new_tokens: int = NEW_TOKENS, **kwargs) -> list[int]:
    with torch.no_grad():
        out = hf.model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=new_tokens,
                                eos_token_id=None, **kwargs)
    return out[0, len(ids):].tolist()


def ids_of(hf, count: int) -> list[list[int]]:
    return [hf.encode(p) for p in MIXED_PROMPTS[:count]]


@pytest.mark.parametrize("penalty", [1.3, 0.7])
def test_greedy_repetition_penalty_equals_hf_generate(checkpoint, oracle, pipeline, penalty):
    path = checkpoint("gqa")
    hf, pipe = oracle(path), pipeline(path)
    prompts = ids_of(hf, 4)
    got = pipe.generate_tokens(prompts, max_new_tokens=NEW_TOKENS, do_sample=False, ignore_eos=True,
                               repetition_penalty=penalty)
    expected = [hf_greedy(hf, ids, repetition_penalty=penalty) for ids in prompts]
    assert [list(g.token_ids) for g in got] == expected
    plain = [hf_greedy(hf, ids) for ids in prompts]
    assert expected != plain, "fixture problem: the penalty must change the greedy output"


def test_greedy_presence_and_frequency_equal_openais_formula_in_hf_generate(checkpoint, oracle, pipeline):
    path = checkpoint("gqa")
    hf, pipe = oracle(path), pipeline(path)
    prompts = ids_of(hf, 3)
    got = pipe.generate_tokens(prompts, max_new_tokens=NEW_TOKENS, do_sample=False, ignore_eos=True,
                               presence_penalty=1.5, frequency_penalty=0.5)
    expected = [hf_greedy(hf, ids, logits_processor=LogitsProcessorList([OpenAIPenalties(len(ids), 1.5, 0.5)]))
                for ids in prompts]
    assert [list(g.token_ids) for g in got] == expected


def test_greedy_logit_bias_equals_hf_sequence_bias(checkpoint, oracle, pipeline):
    path = checkpoint("gqa")
    hf, pipe = oracle(path), pipeline(path)
    ids = hf.encode(MIXED_PROMPTS[1])
    plain = hf_greedy(hf, ids)
    bias = {str(plain[0]): -100, str(plain[3]): -5.5, "7": 2.0}
    got = pipe.generate_tokens([ids], max_new_tokens=NEW_TOKENS, do_sample=False, ignore_eos=True, logit_bias=bias)
    expected = hf_greedy(hf, ids, sequence_bias=[[[int(t)], float(b)] for t, b in bias.items()])
    assert list(got[0].token_ids) == expected and expected[0] != plain[0]


@pytest.mark.parametrize("options", [dict(repetition_penalty=1.3), dict(presence_penalty=2.0),
                                     dict(logit_bias={"7": 3.0}), dict(allowed_token_ids=[5, 9, 12, 30])])
def test_the_overlapped_decode_step_never_skips_a_processor(checkpoint, oracle, pipeline, options):
    """A penalized request beside plain greedy ones under async scheduling: its tokens are HF's with the
    same processor, the plain ones HF's plain greedy, and no step ran ahead while it was in the batch
    (every sequence runs to the same length, so none ran ahead at all)."""
    path = checkpoint("gqa")
    hf, pipe = oracle(path), pipeline(path, **ASYNC)
    prompts = ids_of(hf, 3)
    before = pipe.loop.num_steps_ahead
    penalized = pipe.generate_tokens(prompts[:1], max_new_tokens=NEW_TOKENS, do_sample=False, ignore_eos=True,
                                     **options)
    assert pipe.loop.num_steps_ahead == before
    plain = pipe.generate_tokens(prompts[1:], max_new_tokens=NEW_TOKENS, do_sample=False, ignore_eos=True)
    assert pipe.loop.num_steps_ahead > before, "the plain requests must take the overlapped path"
    assert [list(g.token_ids) for g in plain] == [hf_greedy(hf, ids) for ids in prompts[1:]]
    assert list(penalized[0].token_ids) == hf_greedy(hf, prompts[0], **hf_kwargs(options, len(prompts[0])))


def test_a_penalized_request_in_a_mixed_async_batch_is_never_run_ahead(checkpoint, oracle, pipeline):
    """Submitted together: the batch holds one penalized row; its output is HF's with the penalty. It is
    submitted first and asks for more tokens than the plain rows, so every step holds it: had the plain rows
    finished after it they could rightly run ahead alone (the race a CI run once hit)."""
    path = checkpoint("gqa")
    hf, pipe = oracle(path), pipeline(path, **ASYNC)
    prompts = ids_of(hf, 3)
    longer = NEW_TOKENS * 4  # a margin of 48 steps: the plain rows may be admitted several steps late
    before = pipe.loop.num_steps_ahead
    requests = [pipe.submit(None, pipe_options(dict(repetition_penalty=1.3, max_new_tokens=longer)),
                            prompt_ids=prompts[:1]),
                pipe.submit(None, pipe_options({}), prompt_ids=prompts[1:])]
    outputs = [out for request in requests for out in request.result()]
    assert pipe.loop.num_steps_ahead == before
    assert list(outputs[0].token_ids) == hf_greedy(hf, prompts[0], longer, repetition_penalty=1.3)
    assert [list(o.token_ids) for o in outputs[1:]] == [hf_greedy(hf, ids) for ids in prompts[1:]]


def pipe_options(extra):
    from mii_core.requests import generation_options

    return generation_options({"do_sample": False, "ignore_eos": True, "max_new_tokens": NEW_TOKENS, **extra})


def hf_kwargs(options: dict, prompt_len: int) -> dict:
    if "repetition_penalty" in options:
        return dict(repetition_penalty=options["repetition_penalty"])
    if "presence_penalty" in options:
        return dict(logits_processor=LogitsProcessorList([OpenAIPenalties(prompt_len, options["presence_penalty"], 0)]))
    if "logit_bias" in options:
        return dict(sequence_bias=[[[int(t)], b] for t, b in options["logit_bias"].items()])
    return dict(prefix_allowed_tokens_fn=lambda _batch, _ids: options["allowed_token_ids"])
