"""What every architecture test does: build tiny checkpoints of a family's variants, then check greedy
generation against HF on one mixed-length batch, scheduled whole, in small prompt chunks, or in a KV
cache too small for the batch (so sequences are preempted and recomputed); refuse a bad config.json."""
from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from support.checkpoint_edits import REMOVE, edit_config, randomize_vectors
from support.compare import assert_responses_match
from support.prompts import MIXED_PROMPTS
from support.tiny_models import build_tiny_checkpoint

NEW_TOKENS = 20
SCHEDULES = ("whole", "chunked", "preempted")  # prefix-cached: assert_prefix_cached_matches_hf
# tokens per forward pass when chunking: the longest prompt needs several passes, and chunks of 7 tokens
# straddle the 4-token KV blocks
CHUNK_TOKENS = 7
BLOCK_SIZE = 4
DEFAULT_VECTOR_SPREAD = 0.5


@dataclass
class TinyFamily:
    """Tiny checkpoints of one HF family, built on first use: ``variants[name]`` are the config's keyword
    arguments over the shared ``shape``, ``seeds[name]`` the weights' seed (chosen for clear greedy margins);
    every bias and (unless ``randomize_norms`` is False) every norm is then randomised (see
    :func:`randomize_vectors`). ``tiny_family(mktemp)`` in each tests/test_arch_<family>.py makes its family's (support/arch_checkpoints.py builds them from there)."""
    folder: Callable[[str], Path]  # tmp_path_factory.mktemp
    model_cls: Any
    config_cls: Any
    shape: dict[str, Any]
    variants: dict[str, dict[str, Any]]
    seeds: dict[str, int]
    vector_spread: dict[str, float] = field(default_factory=dict)  # norms' and biases' noise, per variant
    randomize_norms: bool = True
    built: dict[str, Path] = field(default_factory=dict)

    def path(self, variant: str) -> Path:
        if variant not in self.built:
            config = self.config_cls(**self.shape, **self.variants[variant])
            folder = self.folder(re.sub(r"\W+", "-", f"{self.config_cls.__name__}-{variant}"))
            build_tiny_checkpoint(folder, self.model_cls, config, seed=self.seeds[variant])
            spread = self.vector_spread.get(variant, DEFAULT_VECTOR_SPREAD)
            self.built[variant] = randomize_vectors(folder, seed=self.seeds[variant], spread=spread,
                                                    norms=self.randomize_norms)
        return self.built[variant]


def schedule_options(schedule: str, references, new_tokens: int = NEW_TOKENS, cache_blocks: int | None = None) -> dict:
    """Model options that force ``schedule`` on this batch (asserting the batch really needs it).
    ``cache_blocks`` (preempted): the KV cache's size in BLOCK_SIZE-token blocks; by default about 1.5 times
    what the longest sequence needs. A family with a sliding window sets it, as its freed blocks let more fit."""
    if schedule == "whole":
        return {}
    if schedule == "chunked":
        assert max(g.prompt_length for g in references) > 4 * CHUNK_TOKENS, "prompts must need several chunks"
        # a pass cannot hold more sequences than tokens
        limits = {"max_ragged_batch_size": CHUNK_TOKENS, "max_ragged_sequence_count": CHUNK_TOKENS,
                  "kv_block_size": BLOCK_SIZE}
        return {"inference_engine_config": {"state_manager": limits}}
    if schedule == "preempted":
        blocks = [math.ceil((g.prompt_length + new_tokens) / BLOCK_SIZE) for g in references]
        cache_blocks = cache_blocks or max(blocks) * 3 // 2  # the longest sequence fits, the batch does not
        assert sum(blocks) > cache_blocks, "the batch must not fit in the KV cache at once"
        return small_cache_options(cache_blocks)
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")


def small_cache_options(blocks: int) -> dict:
    """Model options for a KV cache of ``blocks`` blocks of BLOCK_SIZE tokens."""
    memory = {"mode": "allocate", "size": blocks}
    return {"inference_engine_config": {"state_manager": {"kv_block_size": BLOCK_SIZE, "memory_config": memory}}}


def assert_greedy_matches_hf(pipeline, oracle, path, schedule: str = "whole", prompts=MIXED_PROMPTS,
                             reference_path=None, new_tokens: int = NEW_TOKENS, cache_blocks: int | None = None):
    """Greedy, EOS ignored, one mixed-length batch: token-exact (text, lengths) against HF per prompt; returns
    the pipeline. ``reference_path``: the folder HF reads, when ``path`` is an edited copy HF may not read alike;
    ``cache_blocks``: see :func:`schedule_options`."""
    reference_path = reference_path or path
    references = [oracle(reference_path).greedy(p, new_tokens, ignore_eos=True) for p in prompts]
    assert_fixture_is_context_sensitive(references, reference_path)
    pipe = pipeline(path, **schedule_options(schedule, references, new_tokens, cache_blocks))
    preemptions_before = pipe.loop.scheduler.num_preemptions
    responses = pipe(prompts, do_sample=False, max_new_tokens=new_tokens, ignore_eos=True)
    assert_responses_match(responses, references)
    if schedule == "preempted":
        assert pipe.loop.scheduler.num_preemptions > preemptions_before, "no sequence was preempted"
    return pipe


def assert_prefix_cached_matches_hf(pipeline, oracle, path, prompts=MIXED_PROMPTS, new_tokens: int = NEW_TOKENS):
    """The mixed batch twice through one engine with BLOCK_SIZE-token blocks: the second time every prompt's
    full blocks come from the prefix cache the first run filled; both runs token-exact against HF. (A model
    whose layers all have a sliding window has no prefix cache: its blocks are freed behind the window.)"""
    references = [oracle(path).greedy(p, new_tokens, ignore_eos=True) for p in prompts]
    pipe = pipeline(path, inference_engine_config={"state_manager": {"kv_block_size": BLOCK_SIZE}})
    cache = pipe.engine.scheduler.kv.prefix_cache
    assert cache is not None, f"{path} runs without a prefix cache (a sliding window on every layer?)"
    hits = []
    for _ in range(2):
        before = cache.hit_blocks
        assert_responses_match(pipe(prompts, do_sample=False, max_new_tokens=new_tokens, ignore_eos=True),
                               references)
        hits.append(cache.hit_blocks - before)
    assert hits[1] > hits[0], f"the second run must reuse the first run's blocks (hit blocks per run: {hits})"


def assert_fixture_is_context_sensitive(references, path) -> None:
    """A model that greedily repeats one token whatever came before would pass parity with broken
    attention or positions; its references must vary (raise the variant's init range if not)."""
    varied = sum(len(set(g.new_ids)) > 3 for g in references)
    assert varied * 2 > len(references), f"fixture problem: {path} mostly repeats a single token"


def assert_config_refused(path, tmp_path, changes: dict[str, Any], named: str) -> None:
    """A copy of ``path`` with ``changes`` made to its config.json fails to load, with a ValueError whose
    message matches ``named``."""
    import mii_core

    broken = edit_config(path, tmp_path / "broken", **changes)
    with pytest.raises(ValueError, match=named):
        mii_core.pipeline(str(broken))


def missing_field_cases(*fields: str) -> dict[str, tuple[dict, str]]:
    """``assert_config_refused`` cases: each field deleted, and an error naming config.json and the field."""
    return {f"no-{field}": ({field: REMOVE}, rf"(?=.*config\.json)(?=.*{field})") for field in fields}


@contextlib.contextmanager
def recording_held_blocks(engine):
    """Records for every forward pass the KV blocks in use as it starts (the scheduler reserved the
    step's blocks: the peak) and, once its tokens are committed, the most blocks one of its sequences
    still holds."""
    in_use, held = [], []
    kv, run, commit = engine.scheduler.kv, engine.runner.run, engine.scheduler.commit

    def recording_run(plan, *args, **kwargs):
        in_use.append(kv.num_blocks - kv.free_blocks)
        return run(plan, *args, **kwargs)

    def recording_commit(plan):
        ready = commit(plan)
        held.append(max(kv.sequences[uid].held_blocks for uid in plan.uids))
        return ready

    # instance attributes shadow the methods for the loop's calls
    engine.runner.run, engine.scheduler.commit = recording_run, recording_commit
    try:
        yield in_use, held
    finally:
        del engine.runner.run, engine.scheduler.commit


def assert_last_logits_close(pipeline, oracle, path, length: int = 40, atol: float = 1e-4) -> None:
    """The engine's last-token logits on one ``length``-token input are within ``atol`` of HF's."""
    import torch

    ids = torch.randint(3, 400, (length,), generator=torch.Generator().manual_seed(0)).tolist()
    engine = pipeline(path).engine
    try:
        torch.testing.assert_close(engine.put([950], [ids])[0], oracle(path).last_logits(ids), atol=atol, rtol=0)
    finally:
        engine.flush(950)
