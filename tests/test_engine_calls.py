"""FastGen's engine calls (put / flush / query / can_schedule) on a cache of known size, against
answers worked out by hand, and put's logits against HF's."""

import pytest
import torch

LOGITS_TOLERANCE = 1e-4  # float32 logits, as the family tests
BLOCK_SIZE, BLOCKS = 4, 10
LIMITS = {"kv_block_size": BLOCK_SIZE, "memory_config": {"mode": "allocate", "size": BLOCKS},
          "max_tracked_sequences": 3, "max_ragged_sequence_count": 2, "max_ragged_batch_size": 16,
          "max_context": 24}


@pytest.fixture
def engine(checkpoint, pipeline):
    engine = pipeline(checkpoint("gqa"), inference_engine_config={"state_manager": LIMITS}).engine
    yield engine
    for uid in (1, 2, 3, 4):
        engine.flush(uid)
    assert engine.free_blocks == BLOCKS, "flush gives every block back"


def test_query_answers_from_the_free_blocks_and_max_context(engine):
    assert engine.query(1, 10, 2) == (8, 2)  # a new sequence: two blocks of 4 hold 8 of the 10 tokens
    assert engine.query(1, 10, 5) == (10, 3)  # room for all 10: ceil(10 / 4) blocks
    engine.put([1], [[5] * 6])  # 6 tokens: 2 blocks, the second with 2 spare slots
    assert engine.free_blocks == BLOCKS - 2
    assert engine.query(1, 5, 0) == (2, 0)  # only the spare slots of its own last block
    assert engine.query(1, 30, 10) == (18, 4)  # max_context 24 - 6 cached caps it; slots 7..24 need 4 blocks


def test_can_schedule_names_the_limit_each_step_breaks(engine):
    from mii_core.kv_cache.manager import SchedulingResult as R

    assert engine.can_schedule([1, 2], [8, 8]) is R.Success
    assert engine.can_schedule([1, 2, 3], [1, 1, 1]) is R.BatchSequenceLimitExceeded  # 2 sequences a step
    assert engine.can_schedule([1], [17]) is R.BatchTokenLimitExceeded  # 16 tokens a step
    assert engine.can_schedule([1], [16]) is R.Success
    engine.put([1], [[5] * 16])  # 4 blocks; 6 left
    assert engine.can_schedule([1], [9]) is R.SequenceTokenLimitExceeded  # 16 + 9 > max_context 24
    assert engine.can_schedule([2], [16]) is R.Success  # 4 blocks of the 6 left
    engine.put([2], [[5] * 16])  # 2 left
    assert engine.can_schedule([3], [9]) is R.KVCacheLimitExceeded  # 3 blocks
    engine.put([3], [[5]])
    assert engine.can_schedule([4], [1]) is R.EngineSequenceLimitExceeded  # 3 sequences tracked already
    assert engine.can_schedule([3], [1]) is R.Success  # a tracked one may go on


def test_put_in_chunks_gives_hf_logits_and_keeps_count(engine, checkpoint, oracle):
    hf = oracle(checkpoint("gqa"))
    ids = hf.encode("The quick brown fox jumps over")
    engine.put([1], [ids[:3]])
    logits = engine.put([1], [ids[3:]])[0]
    # the spare slots of its last block: what is left of ceil(n / 4) blocks after the n tokens put
    assert engine.query(1, 100, 0)[0] == -len(ids) % BLOCK_SIZE, "the cached count is the tokens put"
    torch.testing.assert_close(logits, hf.last_logits(ids).float(), atol=LOGITS_TOLERANCE, rtol=0)
