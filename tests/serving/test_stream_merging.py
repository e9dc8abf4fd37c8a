"""A consumer behind the engine makes one piece of the token events queued back to back for a sequence
(issue 21: per-token work off the engine's way), and the link's response dicts are the Response's fields."""
from dataclasses import asdict
from types import SimpleNamespace

from mii_core.response import Response
from mii_core.serving import wire
from mii_core.serving.stream import RequestStream


class LetterText:
    """Stands in for the tokenizer's text stream: token id i is the letter chr(97 + i)."""

    def push(self, ids):
        return "".join(chr(97 + i) for i in ids)

    def finish(self, final):
        return ""


class LetterDetokenizer:
    def text_stream(self, seq):
        return LetterText()

    def final_text(self, seq):
        return "".join(chr(97 + i) for i in seq.generated_ids)


def sequence(generated):
    options = SimpleNamespace(logprobs=None, prompt_logprobs=None)
    return SimpleNamespace(generated_ids=generated, prompt_ids=[0], options=options, finish_reason="length")


def pieces(request):
    return [(c.index, c.text, c.generated_length, c.finish_reason) for c in request.chunks()]


def test_token_events_of_one_sequence_queued_together_make_one_piece():
    request = RequestStream([sequence([1, 2, 3])], LetterDetokenizer())
    for count in (1, 2, 3):  # three steps' events, read only after the third
        request.post_tokens(0, count)
    request.finish_sequence(0)
    assert pieces(request) == [(0, "bcd", 3, "none"), (0, "", 3, "length")]
    assert request.result()[0].text == "bcd"


def test_events_of_other_sequences_are_not_merged_across():
    request = RequestStream([sequence([1, 2]), sequence([4])], LetterDetokenizer())
    request.post_tokens(0, 1)
    request.post_tokens(1, 1)
    request.post_tokens(0, 2)
    request.finish_sequence(0)
    request.finish_sequence(1)
    assert pieces(request) == [(0, "b", 1, "none"), (1, "e", 1, "none"), (0, "c", 2, "none"),
                               (0, "", 2, "length"), (1, "", 1, "length")]


def test_a_consumer_that_keeps_up_gets_every_step():
    request = RequestStream([sequence([1, 2])], LetterDetokenizer())
    chunks = request.chunks()
    request.post_tokens(0, 1)
    assert next(chunks).text == "b"
    request.post_tokens(0, 2)
    assert next(chunks).text == "c"


def test_response_on_the_wire_holds_exactly_its_fields():
    response = Response("hi", 3, 2, "none", logprobs=[{"token": "h", "token_id": 7, "logprob": -0.5, "top": []}],
                        token_ids=[7, 8])
    assert wire.response_to_wire(response) == asdict(response)
    assert wire.response_from_wire(wire.decode(wire.encode(wire.response_to_wire(response)))) == response


def test_a_generate_request_goes_on_the_wire_as_asdict_made_it_and_comes_back_equal():
    """GenerateRequest.to_wire maps its fields shallowly (asdict's deep copy of every prompt token id led the
    router's profile): the same dict as asdict's, and from_wire after the wire's encoding gives the request."""
    from dataclasses import asdict

    from mii_core.serving.backend import GenerateRequest

    request = GenerateRequest(prompts=None, chats=[[{"role": "user", "content": "hi"}]],
                              options=[{"max_new_tokens": 4, "stop": ["a"]}], stream=True,
                              tools=[{"type": "function", "function": {"name": "f"}}],
                              chat_template_options={"add_generation_prompt": True})
    for case in (request, GenerateRequest(prompt_ids=[[1, 2, 3], [4]], options={"top_k": 2})):
        assert case.to_wire() == {"op": "generate", **asdict(case)}
        assert GenerateRequest.from_wire(wire.decode(wire.encode(case.to_wire()))) == case
