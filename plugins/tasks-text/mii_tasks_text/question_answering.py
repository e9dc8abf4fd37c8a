"""question-answering (extractive): the best span of the context, scored as HF's pipeline did before
transformers 5 dropped it (and as MII Legacy answered): start and end logits outside the context set to
-10000 except the first token's, each softmaxed, the first token then zeroed; a span's score is
p(start)·p(end), start ≤ end < start + ``max_answer_len``, both inside the context."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from mii_core.legacy.task import Prepared, QueryError
from mii_tasks_text.encoder import EncoderTask

MASKED_LOGIT = -10000.0


class QuestionAnswering(EncoderTask):
    """``{"question": str, "context": str}`` → ``{"score", "start", "end", "answer"}`` (``top_k>1``: a list)."""

    auto_class = "AutoModelForQuestionAnswering"
    required_keys = ("question", "context")
    option_names = ("top_k", "max_answer_len")

    def prepare(self, query: Mapping[str, Any], options: Mapping[str, Any]) -> Prepared:
        question, context = self.text(query, "question"), self.text(query, "context")
        encoding = self.encode(question, context, return_offsets_mapping=True)
        in_context = [sequence == 1 for sequence in encoding.sequence_ids()]
        data = {**encoding, "in_context": in_context, "context": context}
        return Prepared(len(encoding["input_ids"]), data, options)

    def respond(self, prepared: Prepared, outputs: Any, row: int) -> Any:
        in_context = torch.tensor(prepared.data["in_context"])
        start = self._probabilities(self.row_logits(outputs.start_logits, prepared, row), in_context)
        end = self._probabilities(self.row_logits(outputs.end_logits, prepared, row), in_context)
        top_k = int(prepared.options.get("top_k", 1))
        spans = self._best_spans(start, end, in_context, top_k, int(prepared.options.get("max_answer_len", 15)))
        if not spans:
            raise QueryError("the question-answering query's context holds no answer span")
        answers = [self._answer(prepared, s, e, score) for s, e, score in spans]
        return answers[0] if top_k == 1 else answers

    @staticmethod
    def _probabilities(logits: torch.Tensor, in_context: torch.Tensor) -> torch.Tensor:
        kept = in_context.clone()
        kept[0] = True  # the first token ([CLS]/<s>) takes part in the normalisation, then drops out
        probs = logits.masked_fill(~kept, MASKED_LOGIT).softmax(dim=-1)
        probs[0] = 0.0
        return probs

    @staticmethod
    def _best_spans(start: torch.Tensor, end: torch.Tensor, in_context: torch.Tensor, top_k: int,
                    max_answer_len: int) -> list[tuple[int, int, float]]:
        scores = torch.triu(torch.tril(start[:, None] * end[None, :], max_answer_len - 1))
        scores[~in_context, :] = 0.0
        scores[:, ~in_context] = 0.0
        values, flat = scores.flatten().topk(min(top_k, scores.numel()))
        size = scores.shape[1]
        return [(int(i) // size, int(i) % size, float(v)) for v, i in zip(values, flat) if v > 0]

    @staticmethod
    def _answer(prepared: Prepared, start: int, end: int, score: float) -> dict:
        offsets = prepared.data["offset_mapping"]
        first, last = offsets[start][0], offsets[end][1]
        return {"score": score, "start": first, "end": last, "answer": prepared.data["context"][first:last]}
