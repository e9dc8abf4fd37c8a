"""Checks every architecture family runs: greedy parity with HF on a mixed batch, plainly, with prompts
chunked by a small token budget, and with a KV cache so small that sequences are preempted."""
from __future__ import annotations

import contextlib
import json

import torch
from safetensors.torch import load_file, save_file

from support.compare import assert_responses_match
from support.prompts import MIXED_PROMPTS

BLOCK_SIZE = 4
TOKEN_BUDGET = 7  # prompt chunks of 7 tokens straddle the 4-token KV blocks
SCHEDULES = ("plain", "chunked", "preempted")


def engine_options(schedule: str, preempt_blocks: int = 0) -> dict:
    """Model options that force the schedule: ``preempt_blocks`` KV blocks of BLOCK_SIZE tokens, which
    the caller picks too few for the whole batch at once but enough for its longest sequence alone."""
    if schedule == "plain":
        return {}
    if schedule == "chunked":
        # the sequence count drops with the token budget: a batch holds no more sequences than tokens
        state = {"max_ragged_batch_size": TOKEN_BUDGET, "max_ragged_sequence_count": TOKEN_BUDGET,
                 "kv_block_size": BLOCK_SIZE}
    else:
        state = {"kv_block_size": BLOCK_SIZE, "memory_config": {"mode": "allocate", "size": preempt_blocks}}
    return {"inference_engine_config": {"state_manager": state}}


def assert_greedy_parity(pipeline, oracle, path, new_tokens: int, schedule: str = "plain",
                         preempt_blocks: int = 0, prompts=MIXED_PROMPTS):
    """Greedy, EOS ignored, one mixed-length batch: token-exact (text, lengths) against HF per prompt."""
    references = [oracle(path).greedy(p, new_tokens, ignore_eos=True) for p in prompts]
    if schedule == "chunked":
        assert max(g.prompt_length for g in references) > 4 * TOKEN_BUDGET, "prompts must need several chunks"
    pipe = pipeline(path, **engine_options(schedule, preempt_blocks))
    preemptions = pipe.loop.scheduler.num_preemptions
    responses = pipe(prompts, do_sample=False, max_new_tokens=new_tokens, ignore_eos=True)
    assert_responses_match(responses, references)
    if schedule == "preempted":
        assert pipe.loop.scheduler.num_preemptions > preemptions, "the KV cache must force preemptions"
    return pipe


@contextlib.contextmanager
def recording_held_blocks(engine):
    """Records for every forward pass the KV blocks in use as it starts (the scheduler reserved the
    step's blocks: the peak) and, after it, the most blocks one of its sequences still holds."""
    in_use, held = [], []
    original = engine.put

    def put(uids, token_lists):
        in_use.append(engine.allocator.num_blocks - engine.allocator.num_free)
        logits = original(uids, token_lists)
        held.append(max(engine.state.sequences[uid].held_blocks for uid in uids))
        return logits

    engine.put = put  # the instance attribute shadows the method for the loop's calls
    try:
        yield in_use, held
    finally:
        del engine.put


def randomize_biases(path, seed: int, std: float) -> None:
    """HF initialises biases to zero, which would hide a bias the engine drops: make them random."""
    file = path / "model.safetensors"
    tensors = load_file(file)
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in tensors.items():
        if name.endswith(".bias"):
            tensors[name] = torch.randn(tensor.shape, generator=generator) * std
    save_file(tensors, file, metadata={"format": "pt"})


def edited_config(folder, source, **changes):
    """``folder`` with a copy of ``source``'s config.json, fields changed (None: removed); no weights,
    as the config is read (and refused) first."""
    config = json.loads((source / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def checkpoint_builder(tmp_path_factory, family: str, write):
    """``build(variant) -> folder``, each variant written once by ``write(folder, variant)``."""
    built = {}

    def build(variant: str):
        if variant not in built:
            built[variant] = write(tmp_path_factory.mktemp(f"{family}-{variant}"), variant)
        return built[variant]

    return build
