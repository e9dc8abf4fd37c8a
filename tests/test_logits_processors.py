"""vLLM's logits processors (mii_core/sampling/processors.py) on the same logits as HF transformers' own
processors, and OpenAI's presence/frequency formula against values worked out by hand."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from transformers.generation import logits_process as hf

from mii_core.config.generation import GenerationConfig
from mii_core.sampling.filters import filter_logits
from mii_core.sampling.processors import LogitsProcessors
from mii_core.sampling.sampler import Sampler

VOCAB, EOS = 12, 2
INF = float("inf")


@dataclass
class Row:
    """What sampling reads from a sequence (SequenceForSampling)."""
    options: GenerationConfig
    prompt_ids: list[int] = field(default_factory=lambda: [5, 7, 7])
    generated_ids: list[int] = field(default_factory=lambda: [1, 4, 4, 9])
    bad_words_ids: list[list[int]] = field(default_factory=list)
    max_new_tokens: int = 32
    generator: object = None
    text_checked: int = 0
    stop_cut: object = None


def row(**options) -> Row:
    bad = options.pop("bad_words_ids", [])
    return Row(GenerationConfig(do_sample=False, **options), bad_words_ids=bad)


def logits_for(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3


def process(rows: list[Row], logits: torch.Tensor) -> torch.Tensor:
    return LogitsProcessors([EOS])(logits, rows)


def ids(r: Row) -> torch.Tensor:
    return torch.tensor([r.prompt_ids + r.generated_ids])


@pytest.mark.parametrize("penalty", [0.5, 1.3, 2.0])
def test_repetition_penalty_is_hfs_over_prompt_and_output(penalty):
    r = row(repetition_penalty=penalty)
    logits = logits_for(1)
    expected = hf.RepetitionPenaltyLogitsProcessor(penalty)(ids(r), logits.clone())
    torch.testing.assert_close(process([r], logits), expected)


def test_presence_and_frequency_penalties_follow_openais_formula_by_hand():
    """logit - frequency * count(output) - presence * [count > 0]; the prompt does not count."""
    r = row(presence_penalty=0.5, frequency_penalty=0.25)  # output 1, 4, 4, 9; prompt 5, 7, 7
    logits = torch.zeros(1, VOCAB)
    expected = torch.zeros(1, VOCAB)
    expected[0, 1] = -0.25 - 0.5
    expected[0, 4] = -0.5 - 0.5
    expected[0, 9] = -0.25 - 0.5
    torch.testing.assert_close(process([r], logits), expected)


def test_negative_penalties_reward_repeats_by_hand():
    r = row(presence_penalty=-1.0, frequency_penalty=-2.0)
    got = process([r], torch.full((1, VOCAB), 1.0))
    assert got[0, 4].item() == 1.0 + 2.0 * 2 + 1.0 and got[0, 5].item() == 1.0  # 5 is only in the prompt


def test_all_three_penalties_combine_repetition_first():
    r = row(repetition_penalty=2.0, presence_penalty=1.0, frequency_penalty=0.5)
    logits = logits_for(1, seed=3)
    repeated = hf.RepetitionPenaltyLogitsProcessor(2.0)(ids(r), logits.clone())
    counts = torch.bincount(torch.tensor(r.generated_ids), minlength=VOCAB).float()
    torch.testing.assert_close(process([r], logits)[0], repeated[0] - 0.5 * counts - 1.0 * (counts > 0).float())


def test_logit_bias_is_hfs_sequence_bias_of_single_tokens():
    bias = {3: 5.0, 8: -100.0, 11: 0.5}
    logits = logits_for(1, seed=1)
    expected = hf.SequenceBiasLogitsProcessor([[[t], b] for t, b in bias.items()])(ids(row()), logits.clone())
    torch.testing.assert_close(process([row(logit_bias={str(t): b for t, b in bias.items()})], logits), expected)


@pytest.mark.parametrize("generated", [[1, 4], [1, 4, 6], [6, 3]])
def test_bad_words_are_hfs_no_bad_words_over_the_output(generated):
    """vLLM bans a word's last token when its other tokens end the output (HF's rule on the same tokens)."""
    words = [[6], [4, 6, 8], [4, 10], [3, 7]]
    r = Row(GenerationConfig(do_sample=False, bad_words=["x"]), generated_ids=generated, bad_words_ids=words)
    logits = logits_for(1, seed=2)
    expected = hf.NoBadWordsLogitsProcessor(words)(torch.tensor([generated]), logits.clone())
    torch.testing.assert_close(process([r], logits), expected)


@pytest.mark.parametrize("generated", [1, 3, 4])
def test_min_tokens_bars_eos_and_stop_token_ids_as_hfs_min_new_tokens(generated):
    r = Row(GenerationConfig(do_sample=False, min_tokens=4, stop_token_ids=[7]), generated_ids=[1] * generated)
    logits = logits_for(1, seed=4)
    prompt = len(r.prompt_ids)
    expected = hf.MinNewTokensLengthLogitsProcessor(prompt, 4, [EOS, 7])(ids(r), logits.clone())
    torch.testing.assert_close(process([r], logits), expected)


def test_allowed_token_ids_keep_only_those_as_hfs_suppress_tokens():
    allowed = [0, 3, 11]
    logits = logits_for(2, seed=5)
    suppress = [t for t in range(VOCAB) if t not in allowed]
    expected = hf.SuppressTokensLogitsProcessor(suppress)(ids(row()), logits[:1].clone())
    got = process([row(allowed_token_ids=allowed), row(allowed_token_ids=[5])], logits)
    torch.testing.assert_close(got[:1], expected)
    assert got[1].isfinite().nonzero().flatten().tolist() == [5]


def test_a_batch_processes_only_the_rows_that_ask_and_leaves_the_raw_logits_alone():
    rows = [row(), row(repetition_penalty=1.5), row(), row(logit_bias={1: 3.0}, presence_penalty=0.2)]
    logits = logits_for(4, seed=6)
    raw = logits.clone()
    got = process(rows, logits)
    torch.testing.assert_close(logits, raw)  # logprobs are computed from these: never changed in place
    torch.testing.assert_close(got[[0, 2]], raw[[0, 2]])
    torch.testing.assert_close(got[1], hf.RepetitionPenaltyLogitsProcessor(1.5)(ids(rows[1]), raw[1:2].clone())[0])
    assert got[3, 1].item() == pytest.approx(raw[3, 1].item() + 3.0 - 0.2)


def test_no_processor_returns_the_same_tensor():
    logits = logits_for(2)
    assert process([row(), row(min_p=0.3, top_k=2)], logits) is logits


@pytest.mark.parametrize("min_p, temperature", [(0.1, 1.0), (0.3, 0.7), (0.05, 1.8), (1.0, 1.0)])
def test_min_p_removes_what_hfs_min_p_warper_removes_at_the_temperature(min_p, temperature):
    logits = logits_for(4, seed=7)
    scaled = hf.TemperatureLogitsWarper(temperature)(None, logits.clone())
    expected = hf.MinPLogitsWarper(min_p)(None, scaled)
    got = filter_logits(logits, temperature=temperature, min_p=torch.full((4,), min_p))
    assert torch.equal(got.isinf(), expected.isinf())


@pytest.mark.parametrize("top_k", [1, 5, VOCAB, 10**9])
def test_top_k_removes_what_hfs_top_k_warper_removes_above_the_vocabulary_too(top_k):
    logits = logits_for(3, seed=8)
    expected = hf.TopKLogitsWarper(min(top_k, VOCAB))(None, logits.clone())
    got = filter_logits(logits, top_k=min(top_k, VOCAB))
    assert torch.equal(got.isinf(), expected.isinf())


@pytest.mark.parametrize("top_k", [-1, 0, None, 10**9, 2**31 - 1])
def test_top_k_off_or_above_the_vocabulary_samples_from_every_token(top_k):
    """vLLM: 0 and -1 mean no top-k; a top_k past the vocabulary keeps every token (no int64 overflow)."""
    sampler = Sampler([EOS], VOCAB)
    seqs = [Row(GenerationConfig(do_sample=True, top_k=top_k, top_p=1.0, temperature=50.0))] * 400
    tokens = sampler(torch.zeros(400, VOCAB), seqs)
    assert len(set(tokens)) == VOCAB  # a uniform row: all 12 tokens come up in 400 draws


def test_greedy_applies_the_processors_before_argmax():
    logits = torch.zeros(3, VOCAB)
    logits[:, 4] = 1.0  # 4 is the best token and the output's most repeated one
    seqs = [row(), row(frequency_penalty=1.0), row(logit_bias={6: 2.0})]
    assert Sampler([EOS], VOCAB)(logits, seqs) == [4, 0, 6]


def test_min_p_sampling_never_draws_a_token_below_the_threshold():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.1, 0.06, 0.04] + [1e-9] * (VOCAB - 5)]))
    seqs = [Row(GenerationConfig(do_sample=True, top_p=1.0, min_p=0.25, seed=3))] * 300
    tokens = Sampler([EOS], VOCAB)(logits.expand(300, -1), seqs)
    assert set(tokens) == {0, 1}  # 0.1 < 0.25 * 0.5

