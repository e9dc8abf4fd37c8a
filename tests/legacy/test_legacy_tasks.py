"""mii_core.legacy's text tasks against HF's pipelines on tiny random checkpoints (scores within float
tolerance), question answering against the best span worked out by brute force from HF's logits, embeddings
against mean pooling computed here, and batches of many queries against the same one by one."""
from __future__ import annotations

import pytest
import torch
import transformers

import mii_core.legacy as mii
from conftest import ENCODERS

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


def assert_same(ours, theirs, path="response"):
    """Equal structure and values; floats within float32 tolerance."""
    if hasattr(theirs, "item"):  # numpy scalars (HF's token scores)
        theirs = theirs.item()
    if isinstance(theirs, float):
        assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-5), path
    elif isinstance(theirs, dict):
        assert sorted(ours) == sorted(theirs), path
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{path}.{key}")
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{path}[{i}]")
    else:
        assert ours == theirs, path


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


def best_span_by_hand(model, tokenizer, question, context, max_answer_len=15):
    """Every (start, end) pair scored from HF's own logits; the pipeline's rules (module docstring of
    mii_tasks_text.question_answering), written as loops."""
    enc = tokenizer(question, context, return_offsets_mapping=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**{k: v for k, v in enc.items() if k in tokenizer.model_input_names})
    in_context = [s == 1 for s in enc.sequence_ids()]
    probs = []
    for logits in (out.start_logits[0], out.end_logits[0]):
        kept = torch.tensor([i == 0 or c for i, c in enumerate(in_context)])
        p = torch.where(kept, logits, torch.tensor(-10000.0)).softmax(-1)
        p[0] = 0.0
        probs.append(p)
    best = max(((probs[0][s] * probs[1][e]).item(), s, e) for s in range(len(in_context))
               for e in range(s, min(s + max_answer_len, len(in_context))) if in_context[s] and in_context[e])
    score, s, e = best
    offsets = enc["offset_mapping"][0]
    first, last = int(offsets[s][0]), int(offsets[e][1])
    return {"score": score, "start": first, "end": last, "answer": context[first:last]}


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
        enc = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**{k: v for k, v in enc.items() if k in tokenizer.model_input_names}).last_hidden_state
        expected = hidden[0].sum(0) / enc["attention_mask"].sum()  # sentence-transformers' mean pooling
        assert torch.allclose(torch.tensor(result.response), expected, atol=1e-5)
    unit = torch.tensor(handle.query({"query": TEXTS[0]}, normalize=True).response)
    assert unit.norm().item() == pytest.approx(1.0, abs=1e-5)
