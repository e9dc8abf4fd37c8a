"""The CUDA-graph decode path's bookkeeping, checked on CPU: the ladder, and that a decode step run
through the padded static buffers gives the logits of the plain ragged batch (the graph is replaced by
an eager run of the same padded step when there is no GPU)."""

import torch

from mii_core.engine.cuda_graphs import batch_size_ladder
from support.prompts import MIXED_PROMPTS


def test_ladder_covers_every_batch_size_up_to_the_max():
    for max_batch in (1, 3, 8, 33, 256, 300):
        sizes = batch_size_ladder(max_batch)
        assert sizes == sorted(set(sizes)) and sizes[0] == 1 and sizes[-1] == max_batch
        assert all(b - a <= 32 for a, b in zip(sizes, sizes[1:]))  # padding waste stays bounded


def test_padded_decode_step_equals_plain_step(checkpoint, oracle, pipeline):
    path = checkpoint("gqa")
    hf = oracle(path)
    engine = pipeline(path, inference_engine_config={"state_manager": {"kv_block_size": 8}}).engine
    prompts = [hf.encode(p) for p in MIXED_PROMPTS[:5]]  # 5 sequences: padded to the ladder's 8
    uids = list(range(500, 505))
    try:
        engine.put(uids, prompts)
        engine.capture_decode_graphs(8)
        assert engine.graphs.sizes[-1] == 8
        next_tokens = [[7], [11], [13], [17], [19]]
        logits = engine.put(uids, next_tokens)
        expected = torch.stack([hf.last_logits(p + t) for p, t in zip(prompts, next_tokens)])
        torch.testing.assert_close(logits.float(), expected, atol=1e-4, rtol=0)
        # the padding rows wrote only into the scratch block, never into a sequence's blocks
        logits = engine.put(uids[:3], [[23], [29], [31]])
        expected = torch.stack([hf.last_logits(p + t + u) for p, t, u in
                                zip(prompts, next_tokens, [[23], [29], [31]])])
        torch.testing.assert_close(logits.float(), expected, atol=1e-4, rtol=0)
    finally:
        engine.graphs = None
        for uid in uids:
            engine.flush(uid)


def test_warm_up_leaves_no_trace(checkpoint, oracle, pipeline):
    path = checkpoint("gqa")
    engine = pipeline(path, inference_engine_config={"state_manager": {"kv_block_size": 8}}).engine
    free_before = engine.free_blocks
    engine.warm_up()
    assert engine.free_blocks == free_before and not engine.scheduler.kv.sequences
    prompt = oracle(path).encode("The old man")
    try:
        logits = engine.put([900], [prompt])
        torch.testing.assert_close(logits[0].float(), oracle(path).last_logits(prompt), atol=1e-4, rtol=0)
    finally:
        engine.flush(900)
