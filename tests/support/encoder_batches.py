"""Batches of encoder-task queries driven straight through a task model (prepare, collate at the bucketed
length, run, respond: what the dynamic batcher does, without its timing), and each answer checked against
HF alone on that query: HF's pipeline (fill-mask, text and token classification), the best span by brute
force from HF's logits (question answering), mean pooling of HF's hidden states (embeddings)."""
from __future__ import annotations

import torch
import transformers

from mii_core.legacy.batcher import bucket_length, length_buckets
from support.legacy_oracles import assert_same, best_span_by_hand, mean_pooling_by_hand

TASKS = ["fill-mask", "text-classification", "token-classification", "question-answering", "feature-extraction"]
BUCKETS = [8, 16, 32]  # the tiny models take 64 tokens: that is the last bucket
# 7 to 35 tokens by the tiny tokenizers: batches straddle the 8, 16 and 32 buckets
TEXTS = ["Hello I'm a {mask}.", "Paris is the {mask} of France.",
         "The quick brown fox jumps over the lazy dog and the {mask} is sunny in London today.",
         "{mask} {mask} is a city.", "My name is Sarah and I live in {mask}, a city in Washington state."]
QA = [{"question": "Who?", "context": "Sarah."},
      {"question": "What is the capital of France?", "context": "Paris is the capital of France."},
      {"question": "Who wrote the book?", "context": "The book was written by a famous author in London."},
      {"question": "Where does Sarah live?", "context": "My name is Sarah and I live in London, a city in "
                                                        "Washington state. The weather today is sunny."}]
# options under which every label or token shows, so that every score is compared
EVERYTHING = {"fill-mask": {"top_k": 3}, "text-classification": {"top_k": None},
              "token-classification": {"ignore_labels": []}, "question-answering": {}, "feature-extraction": {}}
# row counts of the batches: 1, 3 (padded to 4 rows), 4, 5 (padded to 8)
BATCHES = [[0], [1, 0, 2], [3, 1, 2, 0], [4, 3, 2, 1, 0]]


def queries(task: str, tokenizer) -> list[dict]:
    if task == "question-answering":
        return QA + [QA[1]]
    return [{"query": text.format(mask=tokenizer.mask_token)} for text in TEXTS]


def answer_batch(model, batch: list[dict], options: dict) -> list:
    """One forward pass over ``batch`` padded to its bucketed length, each query's response."""
    prepared = [model.prepare(query, options) for query in batch]
    pad_to = bucket_length(max(p.length for p in prepared), length_buckets(BUCKETS, model.max_length))
    outputs = model.run(model.collate(prepared, pad_to))
    return [model.respond(p, outputs, row) for row, p in enumerate(prepared)]


class HFOracle:
    """HF's answer to one query of ``task`` on the checkpoint ``folder``, on ``device``."""

    def __init__(self, task: str, folder, device: str) -> None:
        self.task = task
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        if task == "question-answering":
            self.model = transformers.AutoModelForQuestionAnswering.from_pretrained(folder).to(device).eval()
        elif task == "feature-extraction":
            self.model = transformers.AutoModel.from_pretrained(folder).to(device).eval()
        else:
            self.pipeline = transformers.pipeline(task, model=str(folder), tokenizer=str(folder), device=device)

    def check(self, query: dict, ours, options: dict, rel: float = 1e-4, abs: float = 1e-5) -> None:
        if self.task == "question-answering":
            expected = best_span_by_hand(self.model, self.tokenizer, query["question"], query["context"])
            assert_same(ours, expected, rel=rel, abs=abs)
        elif self.task == "feature-extraction":
            expected = mean_pooling_by_hand(self.model, self.tokenizer, query["query"])
            assert torch.allclose(torch.tensor(ours), expected, rtol=rel, atol=abs)
        else:
            assert_same(ours, self.pipeline(query["query"], **options), rel=rel, abs=abs)


def check_batches(model, oracle: HFOracle, task: str, rel: float = 1e-4, abs: float = 1e-5) -> None:
    """Every batch of BATCHES through ``model``, each answer against HF's on that query alone."""
    every = queries(task, model.tokenizer)
    options = EVERYTHING[task]
    for indices in BATCHES:
        batch = [every[i] for i in indices]
        for query, ours in zip(batch, answer_batch(model, batch, options)):
            oracle.check(query, ours, options, rel, abs)
