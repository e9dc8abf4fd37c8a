"""Tensor parallelism on two real ranks (torchrun, gloo, float32): for every architecture plugin, greedy
tokens with tensor_parallel=2 equal tensor_parallel=1 token for token, scheduled whole, in small chunks
and with preemption; each rank holds about half the parameters and only its KV heads. All the families
run in one torchrun process group to keep the launch cost once."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from support.family_parity import NEW_TOKENS, SCHEDULES, schedule_options
from support.prompts import MIXED_PROMPTS
from support.tp_families import TP_CHECKPOINTS
from support.tp_launch import run_under_torchrun


# Replicated on every rank: norms, routers (small), and in these tiny models two larger parts: OPT-350m's
# learned positions (258 x 64) and project in/out, GPT-2's (256 x 64), Falcon-7B's one KV head (k and v
# whole on both ranks), GPT-Neo's (512 x 64)
MAX_SHARE = {"opt-350m": 0.65, "falcon-7b": 0.6, "gpt2-kit": 0.6, "gpt-neo": 0.65}


# a sliding window frees the blocks behind it, so the batch fits the usual cache: 10 blocks of 4 hold a
# window (16 tokens) of two sequences, not of the whole batch (as in test_arch_mistral)
PREEMPT_BLOCKS = {"mistral-window": 10}


@dataclass
class _Reference:
    prompt_length: int


def _generate(pipe, token_lists) -> list[list[int]]:
    outputs = pipe.generate_tokens(token_lists, max_new_tokens=NEW_TOKENS, do_sample=False, ignore_eos=True)
    return [list(o.token_ids) for o in outputs]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{"family/schedule": (the family's tensor_parallel=1 result, [rank 0 result, rank 1 result])}."""
    import mii_core

    jobs, single = [], {}
    for family, build in TP_CHECKPOINTS.items():
        path = build(tmp_path_factory.mktemp)
        pipe = mii_core.pipeline(str(path))
        token_lists = [pipe.tokenizer(p)["input_ids"] for p in MIXED_PROMPTS]
        # one rank's output does not depend on the schedule (the test_arch_* tests check each against HF)
        single[family] = {"generated": _generate(pipe, token_lists), "kv_heads": pipe.engine.kv_cache.shape.num_kv_heads,
                          "param_bytes": sum(p.numel() * p.element_size() for p in pipe.engine.model.parameters())}
        pipe.destroy()
        for schedule in SCHEDULES:
            options = schedule_options(schedule, [_Reference(len(t)) for t in token_lists],
                                       cache_blocks=PREEMPT_BLOCKS.get(family))
            name = f"{family}/{schedule}"
            jobs.append({"name": name, "path": str(path), "options": options, "token_lists": token_lists,
                         "max_new_tokens": NEW_TOKENS, "all_rank_output": family == "llama"})
    ranks = run_under_torchrun(jobs, tmp_path_factory.mktemp("tp-out"))
    return {job["name"]: (single[job["name"].split("/")[0]], [rank[job["name"]] for rank in ranks]) for job in jobs}


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("family", list(TP_CHECKPOINTS))
def test_tensor_parallel_greedy_equals_one_rank(runs, family, schedule):
    single, (rank0, rank1) = runs[f"{family}/{schedule}"]
    assert rank0["generated"] == single["generated"]
    assert all(len(ids) == NEW_TOKENS for ids in rank0["generated"])
    if schedule == "preempted":
        assert rank0["preemptions"] > 0 and rank1["preemptions"] == rank0["preemptions"]
    # only rank 0 returns results, unless all_rank_output=True (set for llama)
    assert rank1["generated"] == (single["generated"] if family == "llama" else None)


def test_rank0_shares_an_object_with_every_rank(runs):
    """share_from_rank0 (what a server uses to bring rank 0's requests to the others)."""
    for name, (_single, ranks) in runs.items():
        assert [rank["shared"] for rank in ranks] == [{"job": name}] * 2


@pytest.mark.parametrize("family", list(TP_CHECKPOINTS))
def test_each_rank_holds_about_half_the_parameters_and_its_kv_heads(runs, family):
    single, ranks = runs[f"{family}/whole"]
    for rank in ranks:
        share = rank["param_bytes"] / single["param_bytes"]
        assert 0.5 <= share < MAX_SHARE.get(family, 0.55), f"{family}: a rank holds {share:.3f} of the parameters"
        assert rank["kv_heads"] == max(1, single["kv_heads"] // 2)
