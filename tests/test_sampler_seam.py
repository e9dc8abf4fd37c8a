"""The sampler the generation loop calls is a typed seam (``TokenSampler``): the one-rank ``Sampler`` and the
tensor-parallel ``RankZeroSampler`` both implement all of it, and ``RankZeroSampler.all_greedy`` gives the
same answer on every rank without a collective. Expected answers are worked out by hand from HF's rules
(``min_new_tokens`` bars EOS until that many tokens were generated)."""
from __future__ import annotations

import pytest

from mii_core.config.generation import GenerationConfig
from mii_core.distributed.parallel_context import ParallelContext
from mii_core.sampling.protocol import TokenSampler
from mii_core.sampling.rank_zero import RankZeroSampler
from mii_core.sampling.sampler import Sampler
from mii_core.scheduler.sequence import Sequence

EOS = 2
VOCAB = 8


def seq(uid: int, generated: int, **options) -> Sequence:
    return Sequence(uid=uid, prompt_ids=[5, 6], max_new_tokens=16, options=GenerationConfig(**options),
                    generated_ids=[3] * generated)


# (sequences, unread, expected all_greedy)
CASES = [
    ([seq(0, 0, do_sample=False), seq(1, 4, do_sample=False)], 0, True),
    ([seq(0, 0, do_sample=False), seq(1, 4, do_sample=True)], 0, False),  # one samples
    ([seq(0, 1, do_sample=False, min_new_tokens=3)], 0, False),  # 1 generated < 3: EOS barred
    ([seq(0, 1, do_sample=False, min_new_tokens=3)], 2, True),  # 1 + 2 unread = 3: EOS allowed
    ([seq(0, 1, do_sample=False, min_new_tokens=3, ignore_eos=True)], 0, True),  # EOS never stops it
    ([seq(0, 0, do_sample=False), seq(1, 0, do_sample=False, logprobs=0)], 0, False),  # logprobs read the logits
    # vLLM's processors that can move the argmax keep the overlapped (device argmax) path off
    ([seq(0, 2, do_sample=False, repetition_penalty=1.2)], 0, False),
    ([seq(0, 2, do_sample=False, presence_penalty=0.5)], 0, False),
    ([seq(0, 2, do_sample=False, frequency_penalty=-0.5)], 0, False),
    ([seq(0, 2, do_sample=False, logit_bias={"4": 5})], 0, False),
    ([seq(0, 2, do_sample=False, bad_words=["x"])], 0, False),
    ([seq(0, 2, do_sample=False, allowed_token_ids=[3, 4])], 0, False),
    ([seq(0, 1, do_sample=False, min_tokens=3, ignore_eos=True, stop_token_ids=[4])], 0, False),  # 4 barred
    # and those that cannot (greedy ignores min_p and top_k) leave it on
    ([seq(0, 2, do_sample=False, min_p=0.5, top_k=3, presence_penalty=0.0, repetition_penalty=1.0)], 0, True),
]


def samplers(rank: int):
    one_rank = Sampler([EOS], VOCAB)
    return one_rank, RankZeroSampler(Sampler([EOS], VOCAB), ParallelContext(rank=rank, world_size=2))


def test_both_samplers_implement_the_protocol():
    for sampler in samplers(rank=0):
        assert isinstance(sampler, TokenSampler)


@pytest.mark.parametrize("rank", [0, 1])
@pytest.mark.parametrize("seqs, unread, expected", CASES)
def test_all_greedy_is_the_same_answer_on_every_rank(rank, seqs, unread, expected):
    one_rank, tensor_parallel = samplers(rank)
    assert one_rank.all_greedy(seqs, unread) is expected
    assert tensor_parallel.all_greedy(seqs, unread) is expected


def test_under_tensor_parallelism_rank_zero_alone_computes_logprobs():
    import torch

    seqs = [seq(0, 0, do_sample=False, logprobs=2), seq(1, 0, do_sample=False)]
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0]] * 2)
    expected = torch.log_softmax(logits[0], dim=-1)  # worked out from the row: top-2 are ids 3 and 2
    lead, follower = samplers(rank=0)[1], samplers(rank=1)[1]
    first, second = lead.logprobs(logits, seqs, [3, 3])
    assert second is None and (first.token_id, first.top_ids) == (3, (3, 2))
    assert first.logprob == pytest.approx(expected[3].item()) and first.top_logprobs[1] == pytest.approx(expected[2].item())
    assert follower.logprobs(logits, seqs, [3, 3]) == [None, None]


@pytest.mark.parametrize("rank", [0, 1])
def test_a_sequence_under_a_grammar_is_never_plain_argmax(rank):
    guided = seq(1, 2, do_sample=False, guided_regex="[0-9]+")
    guided.grammar = object()  # what matters is that a matcher is attached: its mask must be applied
    for sampler in samplers(rank):
        assert sampler.all_greedy([seq(0, 0, do_sample=False), guided]) is False
