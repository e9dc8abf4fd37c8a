"""Greedy parity of a checkpoint against transformers, under each schedule the engine can take."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence, Union

import torch

# Mixed lengths (1 to 40 words, all from tiny.CORPUS) so one ragged batch holds very short and long sequences.
PROMPTS = [
    "river",
    "The old man",
    "She wrote a long letter to her brother",
    "When the storm passed, the birds came back and the sky turned bright blue again.",
    "The market was busy with farmers selling eggs, milk, cheese and fresh vegetables."
    " We climbed the mountain early in the day",
    "In the middle of the forest there is an old house with a red door and a green roof."
    " The children walked to school together, talking about the game they played last night."
    " Music filled the hall as the band began",
]
SCHEDULES = ("whole", "chunked", "preempted", "prefix-cached")
# tokens per forward pass when chunking: the longest prompt needs several passes, and chunks of 7 tokens
# straddle the 4-token KV blocks
CHUNK_TOKENS = 7
BLOCK_SIZE = 4
# A reference step whose best and second-best logits are closer than this could flip between two correct
# float32 implementations: such a fixture is refused (change its seed or init range).
MIN_GREEDY_MARGIN = 1e-3


@torch.no_grad()
def hf_greedy_ids(path: Union[str, Path], token_lists: Sequence[Sequence[int]], new_tokens: int) -> list[list[int]]:
    """transformers' greedy tokens for each prompt alone, unpadded, EOS ignored, float32, eager attention
    (HF's reference math); a near-tie in any step is an AssertionError naming the fixture."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation="eager").eval()
    expected = []
    for index, ids in enumerate(token_lists):
        out = model.generate(torch.tensor([list(ids)]), do_sample=False, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0, output_logits=True,
                             return_dict_in_generate=True)
        top2 = torch.stack(out.logits)[:, 0].float().topk(2, dim=-1).values
        margins = top2[:, 0] - top2[:, 1]
        if margins.min() < MIN_GREEDY_MARGIN:
            raise AssertionError(f"fixture problem: prompt {index}'s greedy step {int(margins.argmin())} is a "
                                 f"near-tie ({float(margins.min()):.1e}) in {path}; change the seed")
        expected.append(out.sequences[0, len(ids):].tolist())
    return expected


def schedule_options(schedule: str, prompt_lengths: Sequence[int], new_tokens: int,
                     cache_blocks: Union[int, None] = None) -> dict[str, Any]:
    """Model options that force ``schedule`` on a batch of these prompt lengths (asserting it really needs
    it). ``cache_blocks`` (preempted): the KV cache's size in BLOCK_SIZE-token blocks, by default about 1.5
    times what the longest sequence needs (a family with a sliding window sets it: freed blocks let more fit)."""
    if schedule == "whole":
        return {}
    if schedule == "chunked":
        assert max(prompt_lengths) > 4 * CHUNK_TOKENS, "prompts must need several chunks"
        limits = {"max_ragged_batch_size": CHUNK_TOKENS, "max_ragged_sequence_count": CHUNK_TOKENS,
                  "kv_block_size": BLOCK_SIZE}  # a pass cannot hold more sequences than tokens
        return {"inference_engine_config": {"state_manager": limits}}
    if schedule == "preempted":
        blocks = [math.ceil((length + new_tokens) / BLOCK_SIZE) for length in prompt_lengths]
        cache_blocks = cache_blocks or max(blocks) * 3 // 2  # the longest sequence fits, the batch does not
        assert sum(blocks) > cache_blocks, "the batch must not fit in the KV cache at once"
        memory = {"mode": "allocate", "size": cache_blocks}
        return {"inference_engine_config": {"state_manager": {"kv_block_size": BLOCK_SIZE, "memory_config": memory}}}
    if schedule == "prefix-cached":
        return {"inference_engine_config": {"state_manager": {"kv_block_size": BLOCK_SIZE}}}
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")


def assert_greedy_matches_hf(path: Union[str, Path], schedule: str = "whole", prompts: Sequence[str] = PROMPTS,
                             new_tokens: int = 16, **model_options: Any) -> None:
    """Our pipeline's greedy tokens for ``prompts`` in one batch equal transformers' for each alone, under
    ``schedule`` (one of SCHEDULES); "preempted" also asserts a sequence was preempted, "prefix-cached" runs
    the batch twice and asserts the second run reused the first's blocks. ``model_options`` go to
    ``mii_core.pipeline`` (e.g. ``dtype="float32"``, the default on CPU)."""
    import mii_core
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))  # the ids both sides then read
    token_lists = [tokenizer(p)["input_ids"] for p in prompts]
    expected = hf_greedy_ids(path, token_lists, new_tokens)
    options = _merged(model_options, schedule_options(schedule, [len(t) for t in token_lists], new_tokens))
    pipe = mii_core.pipeline(str(path), **options)
    try:
        preempted_before = pipe.loop.scheduler.num_preemptions
        cached = schedule == "prefix-cached"
        hits = []
        for _ in range(2 if cached else 1):
            before = _cache_hits(pipe) if cached else 0
            got = [list(o.token_ids) for o in pipe.generate_tokens(token_lists, max_new_tokens=new_tokens,
                                                                    do_sample=False, ignore_eos=True)]
            _assert_same_tokens(got, expected, schedule)
            hits.append(_cache_hits(pipe) - before if cached else 0)
        if schedule == "preempted":
            assert pipe.loop.scheduler.num_preemptions > preempted_before, "no sequence was preempted"
        if cached:
            assert hits[1] > hits[0], f"the second run did not reuse the first run's blocks (hits per run {hits})"
    finally:
        pipe.destroy()


def _assert_same_tokens(got: list[list[int]], expected: list[list[int]], schedule: str) -> None:
    for index, (ours, theirs) in enumerate(zip(got, expected)):
        if ours != theirs:
            step = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            raise AssertionError(f"prompt {index} ({schedule}) parts from transformers at generated token {step}: "
                                 f"ours {ours[step:step + 4]}..., transformers' {theirs[step:step + 4]}...")


def _cache_hits(pipe) -> int:
    cache = pipe.engine.scheduler.kv.prefix_cache
    if cache is None:
        raise AssertionError("this engine runs without a prefix cache (a sliding window on every layer?)")
    return cache.hit_blocks


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra``'s nested dicts merged in (so a schedule's state_manager keeps the caller's)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged
