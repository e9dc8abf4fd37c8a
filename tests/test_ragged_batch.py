"""The step metadata built on the host: values worked out by hand, and every field 16-byte aligned."""
import dataclasses

import pytest
import torch

from mii_core.batch import build_ragged_batch, logit_rows


def test_fields_hold_the_steps_tokens_positions_and_slots():
    # sequence 0: 2 cached, 3 new in blocks [5, 9] of 4 slots; sequence 1: 6 cached, 1 new in [2, 7]
    batch = build_ragged_batch([[11, 12, 13], [21]], [2, 6], [[5, 9], [2, 7]], 4, torch.device("cpu"))
    assert batch.token_ids.tolist() == [11, 12, 13, 21]
    assert batch.positions.tolist() == [2, 3, 4, 6]
    assert batch.slot_mapping.tolist() == [5 * 4 + 2, 5 * 4 + 3, 9 * 4 + 0, 7 * 4 + 2]
    assert batch.query_start.tolist() == [0, 3, 4]
    assert batch.context_lens.tolist() == [5, 7]
    assert batch.last_token_index.tolist() == [2, 3]
    assert batch.decode_seqs.tolist() == [1] and batch.prefill_seqs.tolist() == [0]
    assert batch.block_tables.tolist() == [[5, 9], [2, 7]]
    assert batch.logit_index is batch.last_token_index  # no sequence scores its prompt: one row each


def test_a_sequence_scoring_its_prompt_gets_logits_for_every_new_token():
    # sequence 0: 1 new token; sequence 1 scores a chunk of 3; sequence 2: 2 new tokens, last only
    batch = build_ragged_batch([[1], [2, 3, 4], [5, 6]], [0, 4, 0], [[1], [2, 3], [4]], 4, torch.device("cpu"),
                               full_logits=[False, True, False])
    assert batch.logit_index.tolist() == [0, 1, 2, 3, 5]
    assert logit_rows([1, 3, 2], [False, True, False]) == ([0, 1, 2, 3, 5], [0, 3, 4])
    misaligned = [name for name in ("logit_index", "decode_seqs") if getattr(batch, name).data_ptr() % 16]
    assert not misaligned


@pytest.mark.parametrize("new_tokens", [[1], [1, 1, 1], [2, 1], [5, 2, 1, 1], [7]])
def test_every_field_starts_on_a_16_byte_boundary(new_tokens):
    """Triton compiles one kernel variant per pointer alignment: a field whose offset moved with the
    step's token count used to make new variants compile in the middle of a workload."""
    token_lists = [[3] * n for n in new_tokens]
    tables = [[i, i + 10, i + 20] for i in range(len(new_tokens))]
    batch = build_ragged_batch(token_lists, [4] * len(new_tokens), tables, 4, torch.device("cpu"))
    tensors = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)
               if isinstance(getattr(batch, f.name), torch.Tensor)}
    assert len(tensors) == 12
    misaligned = {name: t.data_ptr() % 16 for name, t in tensors.items() if t.data_ptr() % 16}
    assert not misaligned
