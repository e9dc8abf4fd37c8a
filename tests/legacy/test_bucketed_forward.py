"""The encoder tasks' ``enable_cuda_graph`` path on a CPU: batches padded up to a batch bucket (spare rows)
at a bucketed length (padded columns), run through static calls made by ``EagerCapture`` (the stand-in for
the capture, the only CUDA-specific step), answer every query as HF does on that query alone. The same
checks on CUDA with real graphs: test_cuda_graphs_gpu.py."""
from __future__ import annotations

import logging

import pytest
import torch
import transformers

import mii_core.legacy as mii
from support.tiny_encoders import ENCODERS
from mii_core.legacy.static_calls import EagerCapture
from mii_core.plugins import get_plugins
from mii_tasks_text.bucketed_forward import batch_bucket
from support.encoder_batches import TASKS, HFOracle, check_batches


def load(task: str, model_type: str, folder, device: str = "cpu", dtype=torch.float32):
    task_class = get_plugins().tasks.load_for(task, model_type)
    return task_class.load(folder, task=task, device=device, dtype=dtype)


def test_batch_buckets_are_powers_of_two():
    assert [batch_bucket(n) for n in (1, 2, 3, 4, 5, 8, 9, 33, 64)] == [1, 2, 4, 4, 8, 8, 16, 64, 64]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model_type", ENCODERS)
def test_padded_batches_answer_as_hf_alone(encoder, model_type, task):
    folder = encoder(model_type, task)
    model = load(task, model_type, folder)
    model.use_static_calls(EagerCapture())
    check_batches(model, HFOracle(task, folder, "cpu"), task)
    # batches of 1, 3, 4 and 5 rows, each a replay: the spare rows of the buckets of 4 and 8 were run
    assert {bucket for bucket, _ in model.bucketed.calls} == {1, 4, 8}
    assert model.bucketed.replays == 4


@pytest.mark.parametrize("model_type", ENCODERS)
def test_real_rows_and_columns_equal_hf_on_each_text_alone(encoder, model_type):
    """The hidden states themselves, token by token: neither spare rows nor padded columns change them."""
    folder = encoder(model_type, "feature-extraction")
    model = load("feature-extraction", model_type, folder)
    model.use_static_calls(EagerCapture())
    hf = transformers.AutoModel.from_pretrained(folder).eval()
    texts = ["Hello.", "Paris is the capital of France.", "The quick brown fox jumps over the lazy dog."]
    prepared = [model.prepare({"query": text}, {}) for text in texts]
    for rows in (3, 2):  # the second batch reuses the graph of 4 rows, its spare rows refilled
        outputs = model.run(model.collate(prepared[:rows], 32))
        assert outputs.last_hidden_state.shape[:2] == (rows, 32)
        for row, text in enumerate(texts[:rows]):
            encoding = model.tokenizer(text, return_tensors="pt")
            with torch.no_grad():
                alone = hf(**{k: v for k, v in encoding.items()
                              if k in model.tokenizer.model_input_names}).last_hidden_state[0]
            assert torch.allclose(outputs.last_hidden_state[row, :len(alone)], alone, atol=1e-5)
    assert list(model.bucketed.calls) == [(4, 32), (2, 32)]


def test_enable_cuda_graph_on_a_cpu_says_why_once_and_runs_eagerly(encoder, caplog):
    folder = encoder("bert", "fill-mask")
    with caplog.at_level(logging.WARNING):
        mii.deploy(task="fill-mask", model=str(folder), deployment_name="graph-cpu", deployment_type="non-persistent",
                   mii_config={"device": "cpu", "enable_cuda_graph": True})
    try:
        response = mii.mii_query_handle("graph-cpu").query({"query": "Paris is the [MASK] of France."}).response
    finally:
        mii.terminate("graph-cpu")
    assert len(response) == 5
    warnings = [r.getMessage() for r in caplog.records if "enable_cuda_graph" in r.getMessage()]
    assert warnings == ["enable_cuda_graph ignored for fill-mask: CUDA graphs need a CUDA device, this deployment "
                        "runs on cpu"]


def test_a_model_type_not_known_to_be_capturable_is_refused_by_name(encoder):
    """A third-party plugin may register the encoder tasks for another model type: its forward pass was
    never read for host synchronisation, so no graph is captured for it, and the reason names it."""
    from mii_tasks_text.fill_mask import FillMask

    config = transformers.ElectraConfig(vocab_size=50, embedding_size=16, hidden_size=32, num_hidden_layers=1,
                                        num_attention_heads=4, intermediate_size=37)
    electra = transformers.ElectraForMaskedLM(config).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(encoder("bert", "fill-mask"))
    refusal = FillMask("fill-mask", electra, tokenizer, "cuda").graph_refusal()
    assert refusal.startswith("the model type 'electra' is not one whose forward pass is known to be capturable")
    bert = load("fill-mask", "bert", encoder("bert", "fill-mask"))
    assert FillMask("fill-mask", bert.model, bert.tokenizer, "cuda").graph_refusal() is None
