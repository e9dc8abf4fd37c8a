"""mii_core.legacy's text tasks against HF's pipelines on tiny random checkpoints (scores within float
tolerance), question answering against the best span worked out by brute force from HF's logits, embeddings
against mean pooling computed here, and batches of many queries against the same one by one."""
from __future__ import annotations

import pytest
import torch
import transformers

import mii_core.legacy as mii
from support.tiny_encoders import ENCODERS
from support.legacy_oracles import assert_same, best_span_by_hand, mean_pooling_by_hand

TEXTS = ["Paris is the capital of France.", "Hello I'm a fashion model.", "The quick brown fox jumps.",
         "I love this movie, it was great!", "Seattle is a city in Washington state."]
# batch_wait_ms: several queries of a test share a forward pass (padded to a bucket), as under load
CONFIG = {"batch_wait_ms": 20.0, "length_buckets": [8, 16, 32]}


@pytest.fixture
def deployed(encoder):
    names = []

    def deploy(task: str, model_type: str, **config):
        folder = encoder(model_type, task)
        name = f"{task}-{model_type}-{len(names)}"
        mii.deploy(task=task, model=str(folder), deployment_name=name, deployment_type="non-persistent",
                   mii_config={**CONFIG, **config})
        names.append(name)
        return mii.mii_query_handle(name), folder

    yield deploy
    for name in names:
        mii.terminate(name)


def concurrently(handle, queries, **options):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(queries)) as pool:
        return list(pool.map(lambda q: handle.query(q, **options), queries))


@pytest.mark.parametrize("model_type", ENCODERS)
def test_fill_mask_equals_hf_pipeline(deployed, hf_pipeline, model_type):
    handle, folder = deployed("fill-mask", model_type)
    hf = hf_pipeline("fill-mask", folder)
    mask = hf.tokenizer.mask_token
    texts = [f"Hello I'm a {mask} model.", f"Paris is the {mask} of France.", f"{mask} {mask} is a city."]
    results = concurrently(handle, [{"query": t} for t in texts])
    for text, result in zip(texts, results):
        assert_same(result.response, hf(text))
        assert result.time_taken > 0
    assert_same(handle.query({"query": texts[0]}, top_k=2).response, hf(texts[0], top_k=2))


# the second query's option makes every label (text) or every token (token) show, so all are compared
@pytest.mark.parametrize("task, every", [("text-classification", {"top_k": None}),
                                         ("token-classification", {"ignore_labels": []})])
@pytest.mark.parametrize("model_type", ENCODERS)
def test_classification_equals_hf_pipeline(deployed, hf_pipeline, model_type, task, every):
    handle, folder = deployed(task, model_type)
    hf = hf_pipeline(task, folder)
    for text, result in zip(TEXTS, concurrently(handle, [{"query": t} for t in TEXTS])):
        assert_same(result.response, hf(text))
    everything = handle.query({"query": TEXTS[0]}, **every).response
    assert len(everything) > 2
    assert_same(everything, hf(TEXTS[0], **every))


@pytest.mark.parametrize("model_type", ENCODERS)
def test_question_answering_equals_best_span_by_hand(deployed, model_type):
    handle, folder = deployed("question-answering", model_type)
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    queries = [{"question": "What is the capital of France?", "context": "Paris is the capital of France."},
               {"question": "Who wrote the book?", "context": "The book was written by a famous author in London."}]
    for query, result in zip(queries, concurrently(handle, queries)):
        expected = best_span_by_hand(model, tokenizer, query["question"], query["context"])
        assert_same(result.response, expected)
        assert result.response["answer"]


@pytest.mark.parametrize("model_type", ENCODERS)
def test_embeddings_equal_mean_pooling_by_hand(deployed, model_type):
    handle, folder = deployed("feature-extraction", model_type)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    for text, result in zip(TEXTS, concurrently(handle, [{"query": t} for t in TEXTS])):
        expected = mean_pooling_by_hand(model, tokenizer, text)
        assert torch.allclose(torch.tensor(result.response), expected, atol=1e-5)
    unit = torch.tensor(handle.query({"query": TEXTS[0]}, normalize=True).response)
    assert unit.norm().item() == pytest.approx(1.0, abs=1e-5)
