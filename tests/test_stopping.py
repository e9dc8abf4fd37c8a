"""Stopping rules and output shaping: stop strings, length limits, min_new_tokens, ignore_eos."""

import json
import re
import shutil

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


def test_repr_of_response_is_its_text_and_equal_fields_compare_equal(gqa):
    """As in MII: print(responses) shows the texts."""
    pipe, _ = gqa
    responses = pipe([PROMPT, "river"], **GREEDY)
    assert repr(responses[0]) == responses[0].generated_text
    assert str(responses) == f"[{responses[0].generated_text}, {responses[1].generated_text}]"
    assert mii_core.Response("a b", 3, 2, "stop") == mii_core.Response("a b", 3, 2, "stop")
    assert mii_core.Response("a b", 3, 2, "stop") != mii_core.Response("a b", 3, 2, "length")


# --- stop strings with min_new_tokens -------------------------------------------------------------


def tokens_until(hf, new_ids, found_in):
    """How many generated tokens it takes until found_in(decoded text) holds."""
    for count in range(1, len(new_ids) + 1):
        if found_in(hf.tokenizer.decode(new_ids[:count], skip_special_tokens=True)):
            return count
    raise AssertionError("fixture problem: the stop string never appears")


def min_tokens_floor(hf, reference, minimum):
    """The text of the first `minimum` generated tokens, and its length (the min_new_tokens point)."""
    floor_text = hf.tokenizer.decode(reference.new_ids[:minimum], skip_special_tokens=True)
    assert reference.text.startswith(floor_text), "fixture: prefix decode must be a prefix of the text"
    return len(floor_text)


def test_stop_before_min_new_tokens_point_does_not_count(gqa):
    """The issue's case (stop="d", min_new_tokens=5 gave empty text): a one-character stop string
    that occurs before the min_new_tokens point and again after it cuts at the later occurrence."""
    pipe, hf = gqa
    minimum = 5
    reference = hf.greedy(PROMPT, NEW_TOKENS, ignore_eos=True)
    floor = min_tokens_floor(hf, reference, minimum)
    early = reference.text[:floor]
    stop = next(c for c in early if c.strip() and c in reference.text[floor:])
    [response] = pipe([PROMPT], stop=stop, min_new_tokens=minimum, **GREEDY)
    cut = reference.text.find(stop, floor)
    expected_length = tokens_until(hf, reference.new_ids, lambda text: text.find(stop, floor) >= 0)
    assert (response.generated_text, response.finish_reason) == (reference.text[:cut], "stop")
    assert response.generated_length == expected_length
    assert response.generated_text.startswith(early) and len(response.generated_text) > len(early)


def test_stop_across_min_new_tokens_point_keeps_the_text_before_it(gqa):
    """A match that starts before the min_new_tokens point and ends after it counts, but the cut
    falls at that point: the text of the first min_new_tokens tokens is never shortened."""
    pipe, hf = gqa
    minimum = 5
    reference = hf.greedy(PROMPT, NEW_TOKENS, ignore_eos=True)
    floor = min_tokens_floor(hf, reference, minimum)
    stop = reference.text[floor - 2 : floor + 2]
    assert reference.text.find(stop, floor - len(stop) + 1) == floor - 2, "fixture: pick another span"
    [response] = pipe([PROMPT], stop=stop, min_new_tokens=minimum, **GREEDY)
    expected_length = tokens_until(hf, reference.new_ids, lambda text: text.find(stop, floor - 3) >= 0)
    assert (response.generated_text, response.finish_reason) == (reference.text[:floor], "stop")
    assert response.generated_length == expected_length


# --- the length rule: max_length caps prompt + output; hard ceilings are never passed --------------


def test_model_max_length_caps_max_new_tokens(checkpoint, oracle, pipeline):
    """pipeline(M, max_length=64)("Seattle is", max_new_tokens=100) used to give 100 new tokens."""
    path = checkpoint("gqa")
    hf = oracle(path)
    prompt_length = len(hf.encode(PROMPT))
    pipe = pipeline(path, max_length=prompt_length + 7)
    [response] = pipe([PROMPT], do_sample=False, max_new_tokens=100, ignore_eos=True)
    assert (response.generated_length, response.finish_reason) == (7, "length")
    assert response.generated_text == hf.greedy(PROMPT, 7, ignore_eos=True).text
    [shorter] = pipe([PROMPT], do_sample=False, max_new_tokens=3, ignore_eos=True)
    assert shorter.generated_length == 3


def test_call_max_length_caps_max_new_tokens(gqa):
    pipe, hf = gqa
    prompt_length = len(hf.encode(PROMPT))
    [response] = pipe([PROMPT], do_sample=False, max_length=prompt_length + 6, max_new_tokens=100, ignore_eos=True)
    assert (response.generated_length, response.generated_text) == (6, hf.greedy(PROMPT, 6, ignore_eos=True).text)


@pytest.fixture(scope="module")
def short_positions(checkpoint, tmp_path_factory):
    """The gqa checkpoint with max_position_embeddings 16 (default rope: the weights act the same)."""
    folder = tmp_path_factory.mktemp("short-positions") / "model"
    shutil.copytree(checkpoint("gqa"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = 16
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_generation_stops_at_max_position_embeddings(short_positions, checkpoint, oracle, pipeline):
    hf = oracle(checkpoint("gqa"))
    room = 16 - len(hf.encode(PROMPT))
    [response] = pipeline(short_positions)([PROMPT], do_sample=False, ignore_eos=True)
    assert (response.generated_length, response.finish_reason) == (room, "length")
    assert response.generated_text == hf.greedy(PROMPT, room, ignore_eos=True).text


@pytest.mark.parametrize("options, quoted", [
    (dict(max_new_tokens=100), "max_new_tokens=100"),
    (dict(max_length=20), "max_length=20"),
    (dict(max_length=20, max_new_tokens=5), "max_length=20"),
])
def test_asking_past_max_position_embeddings_names_both_numbers(short_positions, pipeline, options, quoted):
    pipe = pipeline(short_positions)
    with pytest.raises(ValueError, match=re.escape(quoted) + r".*max_position_embeddings \(16"):
        pipe([PROMPT], do_sample=False, **options)
    assert pipe([PROMPT], do_sample=False, max_new_tokens=2, ignore_eos=True)[0].generated_length == 2


def test_model_max_length_past_max_position_embeddings_is_refused(short_positions):
    with pytest.raises(ValueError, match=r"max_length=20 .*max_position_embeddings \(16"):
        mii_core.pipeline(str(short_positions), max_length=20)


def test_length_errors_quote_the_users_values(checkpoint, pipeline):
    """max_length=290, max_new_tokens=300 once reported "max_new_tokens (239)", a derived number;
    max_context=1 was reported as "max_length (1)", an option the user never gave."""
    path = checkpoint("gqa")
    pipe = pipeline(path, inference_engine_config={"state_manager": {"max_context": 256}})
    with pytest.raises(ValueError, match=r"^max_length=290 exceeds inference_engine_config\.state_manager\."
                                         r"max_context \(256 tokens\)"):
        pipe([PROMPT], max_length=290, max_new_tokens=300)
    tiny_context = pipeline(path, inference_engine_config={"state_manager": {"max_context": 1}})
    with pytest.raises(ValueError) as failure:
        tiny_context([PROMPT], do_sample=False)
    message = str(failure.value)
    assert "max_context (1 tokens)" in message and "max_length" not in message
