"""Structured output (vLLM's guided_* options) through the pipeline on the tiny random Llama, sampled at
temperature 1: whatever the model would say, the output follows the guide. Checked by the jsonschema library
and Python's re, never by the grammar library that made the masks."""
from __future__ import annotations

import json
import re

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings

from support.json_schemas import schemas

SAMPLED = {"do_sample": True, "top_p": 1.0}
PROMPTS = ["The quick brown fox", "A small boat drifted"]
BUDGET = 160  # tokens; every value the random schemas allow is far shorter


@pytest.fixture(scope="module")
def pipe(checkpoint, pipeline):
    return pipeline(checkpoint("gqa"))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=schemas)
def test_sampled_output_always_validates_against_a_random_schema(pipe, schema):
    for response in pipe(PROMPTS, guided_json=schema, max_new_tokens=BUDGET, **SAMPLED):
        assert response.finish_reason == "stop", (schema, response.generated_text)
        jsonschema.validate(json.loads(response.generated_text), schema)


def test_a_schema_given_as_json_text_is_the_same_guide(pipe):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    for response in pipe(PROMPTS, guided_json=json.dumps(schema), max_new_tokens=BUDGET, **SAMPLED):
        assert json.loads(response.generated_text) in ({"ok": True}, {"ok": False})


def test_json_object_gives_a_json_object(pipe):
    for response in pipe(PROMPTS * 2, guided_json_object=True, max_new_tokens=BUDGET, seed=3, **SAMPLED):
        if response.finish_reason == "stop":  # an open-ended object may run past the budget
            assert isinstance(json.loads(response.generated_text), dict)
        else:
            assert response.generated_text.startswith("{")


@pytest.mark.parametrize("pattern", [r"[a-z]{2,4}-\d\d", r"(yes|no), [0-9]+!", r"\w+@\w+\.com"])
def test_sampled_output_matches_the_regex(pipe, pattern):
    for response in pipe(PROMPTS * 2, guided_regex=pattern, max_new_tokens=40, **SAMPLED):
        if response.finish_reason == "stop":
            assert re.fullmatch(pattern, response.generated_text), response.generated_text
        else:  # \w+ may run on; what there is must still be a beginning of a match
            assert response.finish_reason == "length"


def test_sampled_output_is_one_of_the_choices(pipe):
    choices = ["red", "green apple", "a.b*c"]  # regex characters in a choice are plain text
    texts = {r.generated_text for r in pipe(PROMPTS * 4, guided_choice=choices, max_new_tokens=20, **SAMPLED)}
    assert texts <= set(choices)


def test_sampled_output_follows_an_ebnf_grammar(pipe):
    grammar = 'root ::= "(" item ("," item)? ")"\nitem ::= [ab] [0-9]'
    for response in pipe(PROMPTS * 2, guided_grammar=grammar, max_new_tokens=20, **SAMPLED):
        assert re.fullmatch(r"\([ab][0-9](,[ab][0-9])?\)", response.generated_text), response.generated_text


def test_a_guide_that_cannot_finish_in_max_tokens_ends_with_length(pipe):
    [response] = pipe(PROMPTS[:1], guided_regex="a{40}", max_new_tokens=5, do_sample=False)
    assert response.finish_reason == "length"
    assert re.fullmatch("a+", response.generated_text) and len(response.generated_text) < 40


@pytest.mark.parametrize("options, named", [
    ({"guided_json": {"type": "nonsense"}}, "guided_json"),
    ({"guided_json": "{not json"}, "guided_json"),
    ({"guided_regex": "(ab"}, "guided_regex"),
    ({"guided_grammar": "root ::= item"}, "guided_grammar"),
    ({"guided_choice": []}, "guided_choice"),
    ({"guided_regex": "a", "guided_choice": ["a"]}, "at most one of"),
])
def test_a_bad_guide_is_refused_naming_its_option(pipe, options, named):
    with pytest.raises(ValueError, match=named):
        pipe(PROMPTS[:1], max_new_tokens=4, **options)


def test_the_overlapped_decode_step_never_skips_a_grammar_mask(checkpoint, pipeline):
    pipe = pipeline(checkpoint("gqa"), inference_engine_config={"async_scheduling": True})
    before = pipe.loop.num_steps_ahead
    responses = pipe(PROMPTS, guided_regex=r"[0-9]{6}", max_new_tokens=10, do_sample=False)
    assert [r.finish_reason for r in responses] == ["stop", "stop"]
    assert all(re.fullmatch(r"[0-9]{6}", r.generated_text) for r in responses)
    assert pipe.loop.num_steps_ahead == before
    pipe(PROMPTS, max_new_tokens=10, do_sample=False, ignore_eos=True)
    assert pipe.loop.num_steps_ahead > before, "plain greedy requests must take the overlapped path"
