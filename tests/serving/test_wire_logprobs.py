"""The link carries a response's logprobs in one shape: lists of entry dicts, a prompt's led by None."""

import pytest

from mii_core.response import Response
from mii_core.serving.wire import MalformedMessage, decode, encode, response_from_wire, response_to_wire

ENTRY = {"token": "a", "token_id": 5, "logprob": -0.5, "top": [{"token": "b", "token_id": 6, "logprob": -0.1}]}


def test_a_response_with_prompt_logprobs_survives_the_link():
    response = Response("x", 3, 1, "length", logprobs=[ENTRY], token_ids=[5], prompt_logprobs=[None, ENTRY, ENTRY],
                        prompt_token_ids=[1, 5, 5])
    assert response_from_wire(decode(encode(response_to_wire(response)))) == response


@pytest.mark.parametrize("field, value", [
    ("prompt_logprobs", [ENTRY, None]),  # only the first token may have none
    ("logprobs", [None, ENTRY]),  # generated tokens always have one
    ("prompt_token_ids", [1, "2"]),
    ("prompt_logprobs", "none"),
])
def test_malformed_logprob_fields_are_refused_by_name(field, value):
    data = response_to_wire(Response("x", 3, 1, "length"))
    data[field] = value
    with pytest.raises(MalformedMessage, match=field):
        response_from_wire(data)
