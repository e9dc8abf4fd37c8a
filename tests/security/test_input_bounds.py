"""Inputs that used to cost every user or give silent garbage are bounded (issue 22, rows 5, 6 and 9)."""
from __future__ import annotations

import json
import threading
import time

import pytest

from support.compare import assert_responses_match


def test_a_temperature_float32_cannot_hold_is_refused_naming_it(checkpoint, pipeline):
    pipe = pipeline(checkpoint("gqa"))
    with pytest.raises(ValueError, match="temperature"):
        pipe(["Seattle is"], do_sample=True, top_k=1, temperature=1e308, max_new_tokens=4)


def test_a_huge_temperature_with_top_k_1_still_gives_the_greedy_token(checkpoint, oracle, pipeline):
    """top_k=1 leaves one token whatever the temperature: HF's greedy text, never token 0 from a NaN."""
    path = checkpoint("gqa")
    pipe = pipeline(path)
    responses = pipe(["Seattle is"], do_sample=True, top_k=1, temperature=1e30, max_new_tokens=8, ignore_eos=True)
    assert_responses_match(responses, [oracle(path).greedy("Seattle is", 8, ignore_eos=True)])


def test_stop_strings_are_bounded_in_count_and_length(checkpoint, pipeline):
    pipe = pipeline(checkpoint("gqa"))
    with pytest.raises(ValueError, match=r"stop takes at most 64 strings of at most 1024 characters"):
        pipe(["Seattle is"], stop=[f"s{i}" for i in range(65)])
    with pytest.raises(ValueError, match=r"stop takes at most 64 strings of at most 1024 characters"):
        pipe(["Seattle is"], stop=["x" * 1025])
    pipe(["Seattle is"], stop=[f"s{i}" for i in range(64)], max_new_tokens=2)  # the limits themselves are fine


def test_a_prompt_too_long_in_characters_is_refused_before_it_is_tokenized(checkpoint, pipeline):
    path = checkpoint("gqa")
    pipe = pipeline(path)
    longest = max(len(entry) for entry in pipe.tokenizer.get_vocab())  # worked out here, not by the pipeline
    positions = json.loads((path / "config.json").read_text())["max_position_embeddings"]
    ceiling = min(8192, positions) * longest  # the tighter of the default max_context and the model's positions
    assert pipe.max_prompt_chars.chars == ceiling
    calls = []
    real = pipe.tokenizer.__class__.__call__
    pipe.tokenizer.__class__.__call__ = lambda self, *a, **k: calls.append(1) or real(self, *a, **k)
    try:
        start = time.monotonic()
        with pytest.raises(ValueError, match=rf"prompt 1 has {ceiling + 1} characters.*{ceiling} characters"):
            pipe(["Seattle is", "a" * (ceiling + 1)], max_new_tokens=2)
        assert calls == [], "nothing was tokenized"
        assert time.monotonic() - start < 1.0
    finally:
        pipe.tokenizer.__class__.__call__ = real


class SlowTokenizer:
    """Counts how many calls run at once (each takes 0.1 s)."""

    def __init__(self) -> None:
        self.running = self.most = 0
        self.lock = threading.Lock()

    def __call__(self, text: str) -> dict:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.1)
        with self.lock:
            self.running -= 1
        return {"input_ids": [1] * len(text)}


@pytest.mark.parametrize("chars, most_at_once", [(100, 2), (10, 6)])
def test_large_texts_take_turns_to_be_tokenized(monkeypatch, chars, most_at_once):
    """Six threads: texts over the threshold (lowered here to 50 characters) at most two at a time, small
    ones all at once."""
    from mii_core import requests as checks

    monkeypatch.setattr(checks, "LARGE_TEXT_CHARS", 50)
    tokenizer = SlowTokenizer()
    threads = [threading.Thread(target=checks.tokenize_prompts, args=(tokenizer, ["x" * chars])) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tokenizer.most == most_at_once
