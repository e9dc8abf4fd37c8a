"""Hostile bodies for the REST routes, drawn by hypothesis (seeded, a few hundred a run): every answer is a
2xx, or a 4xx with OpenAI's JSON error shape, never a 5xx; afterwards a greedy request still equals its
reference (issue 22, "Tests"). Against the shared demo deployment (no API key)."""
from __future__ import annotations

import json

import requests
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from support.compare import reference_fields

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))

TEXT = st.text(max_size=40)
SMALL_COUNT = st.integers(min_value=-3, max_value=3)
ANY_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                       st.floats(allow_nan=True, allow_infinity=True), TEXT)
ODD = st.one_of(ANY_SCALAR, st.lists(ANY_SCALAR, max_size=3), st.dictionaries(TEXT, ANY_SCALAR, max_size=2))
NUMBER = st.one_of(st.floats(min_value=-5, max_value=5), st.sampled_from([0, 1e-40, 1e30, 1e308, -1e308]), ODD)
PROMPTS = st.one_of(TEXT, st.lists(TEXT, max_size=3), st.lists(st.integers(-5, 300), max_size=4),
                    st.lists(st.lists(st.integers(-5, 300), max_size=3), max_size=2), ODD)
STOP = st.one_of(TEXT, st.lists(TEXT, max_size=3), ODD)

COMMON = {"temperature": NUMBER, "top_p": NUMBER, "top_k": st.one_of(SMALL_COUNT, ODD), "seed": ODD,
          "stop": STOP, "stream": st.one_of(st.booleans(), ODD), "min_new_tokens": st.one_of(SMALL_COUNT, ODD)}
MII_BODY = st.fixed_dictionaries(
    {"prompts": PROMPTS, "max_new_tokens": st.one_of(SMALL_COUNT, ODD)},
    optional={**COMMON, "do_sample": st.one_of(st.booleans(), ODD), "ignore_eos": ODD, "bogus": ODD})
COMPLETION_BODY = st.fixed_dictionaries(
    {"model": st.one_of(st.just("demo"), ODD), "prompt": PROMPTS, "max_tokens": st.one_of(SMALL_COUNT, ODD)},
    optional={**COMMON, "n": SMALL_COUNT, "logprobs": ODD, "echo": ODD, "user": ODD, "best_of": ODD,
              "presence_penalty": NUMBER, "stream_options": ODD, "bogus": ODD})
MESSAGE = st.one_of(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "x"]),
                                           "content": st.one_of(TEXT, ODD)}), ODD)
CHAT_BODY = st.fixed_dictionaries(
    {"model": st.one_of(st.just("demo"), ODD), "messages": st.one_of(st.lists(MESSAGE, max_size=3), ODD),
     "max_tokens": st.one_of(SMALL_COUNT, ODD)},
    optional={**COMMON, "n": SMALL_COUNT, "response_format": ODD, "tools": ODD, "logprobs": ODD, "bogus": ODD})


def answer_is_well_formed(url: str, body: dict) -> None:
    data = json.dumps(body)  # NaN and Infinity go as Python writes them: not JSON, so a 400 bad_json
    response = requests.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=60)
    assert response.status_code < 500, (body, response.status_code, response.text[:300])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) >= {"message", "type", "code"}, (body, error)
    elif response.headers["Content-Type"].startswith("text/event-stream"):
        assert response.text.rstrip().endswith(("[DONE]", "}")), (body, response.text[-200:])
    else:
        response.json()


def rest(demo) -> str:
    return f"http://localhost:{demo.record.front_ends['rest'][1]}"


@seed(22)
@FUZZ
@given(body=MII_BODY)
def test_fuzzed_mii_bodies_get_a_2xx_or_a_json_4xx(demo, body):
    answer_is_well_formed(f"{rest(demo)}/mii/demo", body)


@seed(23)
@FUZZ
@given(body=COMPLETION_BODY)
def test_fuzzed_completion_bodies_get_a_2xx_or_a_json_4xx(demo, body):
    answer_is_well_formed(f"{rest(demo)}/v1/completions", body)


@seed(24)
@FUZZ
@given(body=CHAT_BODY)
def test_fuzzed_chat_bodies_get_a_2xx_or_a_json_4xx(demo, body):
    answer_is_well_formed(f"{rest(demo)}/v1/chat/completions", body)


def test_after_the_fuzz_greedy_output_is_unchanged(demo, chat_checkpoint, oracle):
    answer = requests.post(f"{rest(demo)}/mii/demo", json={"prompts": ["The old man"], "max_new_tokens": 8,
                                                          "do_sample": False, "ignore_eos": True}, timeout=60)
    assert answer.json() == [reference_fields(oracle(chat_checkpoint).greedy("The old man", 8, ignore_eos=True))]
