"""Stopping rules and output shaping: stop strings, length limits, min_new_tokens, ignore_eos."""

import pytest

import mii_core  # noqa: F401  (Response type checks below)
from support.compare import assert_responses_match

PROMPT = "The old man"
NEW_TOKENS = 24
GREEDY = dict(do_sample=False, max_new_tokens=NEW_TOKENS, ignore_eos=True)
# gqa checkpoint: HF greedy emits "brW" then EOS (3 tokens) for this prompt.
EARLY_EOS_PROMPT = "the river"


def stop_string_at(text, fraction, length=5):
    """A `length`-char substring that first occurs near `fraction` of `text` and spans 2+ tokens.

    An inner space means a token boundary: this tokenizer never puts a space inside a token.
    """
    for start in range(int(len(text) * fraction), len(text) - length):
        candidate = text[start : start + length]
        if candidate.strip() == candidate and " " in candidate and text.find(candidate) == start:
            return candidate
    raise AssertionError(f"fixture problem: no usable stop string in {text!r}")


@pytest.fixture(scope="module")
def gqa(checkpoint, oracle, pipeline):
    path = checkpoint("gqa")
    return pipeline(path), oracle(path)


def test_stop_string_cuts_before_first_occurrence(gqa):
    pipe, hf = gqa
    reference = hf.greedy(PROMPT, NEW_TOKENS, ignore_eos=True).text
    other_prompt = "river"
    other_reference = hf.greedy(other_prompt, NEW_TOKENS, ignore_eos=True).text
    stop = stop_string_at(reference, 0.5)
    assert stop not in other_reference, "fixture problem: the other prompt must not stop"
    plain, other = pipe([PROMPT, other_prompt], stop=stop, **GREEDY)
    assert (plain.generated_text, plain.finish_reason) == (reference[: reference.find(stop)], "stop")
    assert (other.generated_text, other.finish_reason) == (other_reference, "length")


def test_stop_list_cuts_at_earliest_match(gqa):
    pipe, hf = gqa
    reference = hf.greedy(PROMPT, NEW_TOKENS, ignore_eos=True).text
    early, late = stop_string_at(reference, 0.3), stop_string_at(reference, 0.7)
    assert reference.find(early) < reference.find(late)
    [response] = pipe([PROMPT], stop=["never seen", late, early], **GREEDY)
    assert (response.generated_text, response.finish_reason) == (reference[: reference.find(early)], "stop")


def test_max_new_tokens_limits_generation(gqa):
    pipe, hf = gqa
    [response] = pipe([PROMPT], do_sample=False, max_new_tokens=5, ignore_eos=True)
    assert_responses_match([response], [hf.greedy(PROMPT, 5, ignore_eos=True)])


def test_max_length_caps_prompt_plus_generation(gqa):
    pipe, hf = gqa
    prompt_length = len(hf.encode(PROMPT))
    [response] = pipe([PROMPT], do_sample=False, max_length=prompt_length + 7, ignore_eos=True)
    assert (response.generated_length, response.finish_reason) == (7, "length")
    assert_responses_match([response], [hf.greedy(PROMPT, 7, ignore_eos=True)])


def test_min_new_tokens_masks_eos_like_hf(gqa):
    pipe, hf = gqa
    assert hf.greedy(EARLY_EOS_PROMPT, NEW_TOKENS).generated_length < 8, "fixture: EOS must come early"
    reference = hf.greedy(EARLY_EOS_PROMPT, NEW_TOKENS, min_new_tokens=8)
    responses = pipe([EARLY_EOS_PROMPT], do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=8)
    assert_responses_match(responses, [reference])


def test_ignore_eos_runs_to_the_limit(gqa):
    pipe, hf = gqa
    until_eos = hf.greedy(EARLY_EOS_PROMPT, NEW_TOKENS)
    assert until_eos.finish_reason == "stop"
    [response] = pipe([EARLY_EOS_PROMPT], do_sample=False, max_new_tokens=12, ignore_eos=True)
    assert (response.generated_length, response.finish_reason) == (12, "length")
    # Whether EOS is emitted or masked, the text before it is the same.
    assert response.generated_text.startswith(until_eos.text)


def test_return_full_text_prepends_prompt(gqa):
    pipe, hf = gqa
    [response] = pipe([PROMPT], return_full_text=True, **GREEDY)
    assert response.generated_text == PROMPT + hf.greedy(PROMPT, NEW_TOKENS, ignore_eos=True).text


def test_single_string_prompt_returns_list_of_one(gqa):
    pipe, hf = gqa
    responses = pipe(PROMPT, **GREEDY)
    assert isinstance(responses, list) and len(responses) == 1
    assert isinstance(responses[0], mii_core.Response)
    assert_responses_match(responses, [hf.greedy(PROMPT, NEW_TOKENS, ignore_eos=True)])


def test_str_of_response_is_its_text(gqa):
    pipe, _ = gqa
    [response] = pipe([PROMPT], **GREEDY)
    assert response.generated_text
    assert str(response) == response.generated_text
