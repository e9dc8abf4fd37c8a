"""Comparing engine Responses with HF reference generations."""

from __future__ import annotations


def reference_fields(gen) -> dict:
    return {
        "generated_text": gen.text,
        "prompt_length": gen.prompt_length,
        "generated_length": gen.generated_length,
        "finish_reason": gen.finish_reason,
    }


def response_fields(response) -> dict:
    return {name: getattr(response, name) for name in ("generated_text", "prompt_length", "generated_length", "finish_reason")}


def assert_responses_match(responses, references) -> None:
    """Same text (hence, in practice, same token ids), lengths and finish reason, per prompt."""
    assert isinstance(responses, list), f"pipeline must return a list, got {type(responses).__name__}"
    assert len(responses) == len(references), "one Response per prompt"
    assert [response_fields(r) for r in responses] == [reference_fields(g) for g in references]


def assert_texts_match(responses, references) -> None:
    assert [r.generated_text for r in responses] == [g.text for g in references]
