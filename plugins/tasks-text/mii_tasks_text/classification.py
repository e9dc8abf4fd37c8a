"""text-classification and token-classification, as HF's pipelines report them (default options)."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from mii_core.legacy.task import Prepared
from mii_tasks_text.encoder import EncoderTask


class TextClassification(EncoderTask):
    """``[{"label", "score"}]`` (the top label); ``top_k=n`` or ``top_k=None``: the n best or all, best first."""

    auto_class = "AutoModelForSequenceClassification"
    option_names = ("top_k",)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        config = self.model.config
        if config.problem_type == "regression":
            return logits
        if config.problem_type == "multi_label_classification" or config.num_labels == 1:
            return logits.sigmoid()
        return logits.softmax(dim=-1)

    def respond(self, prepared: Prepared, outputs: Any, row: int) -> Any:
        scores = self.scores(outputs.logits[row])
        labels = self.model.config.id2label
        ranked = sorted(({"label": labels[i], "score": float(s)} for i, s in enumerate(scores.tolist())),
                        key=lambda entry: entry["score"], reverse=True)
        if "top_k" not in prepared.options:
            return ranked[:1]
        top_k = prepared.options["top_k"]
        return ranked if top_k is None else ranked[:top_k]


class TokenClassification(EncoderTask):
    """One entry per token whose label is not "O" (HF's ``aggregation_strategy="none"``)."""

    auto_class = "AutoModelForTokenClassification"
    option_names = ("ignore_labels",)

    def respond(self, prepared: Prepared, outputs: Any, row: int) -> Any:
        scores = self.row_logits(outputs.logits, prepared, row).softmax(dim=-1)
        ignore = prepared.options.get("ignore_labels", ["O"])
        return [entity for entity in self._entities(prepared, scores) if entity["entity"] not in ignore]

    def prepare(self, query: Mapping[str, Any], options: Mapping[str, Any]) -> Prepared:
        prepared = super().prepare(query, options)
        prepared.data["sentence"] = query["query"]  # an unknown token is reported as its text
        return prepared

    def _entities(self, prepared: Prepared, scores: torch.Tensor) -> list[dict]:
        encoding, labels = prepared.data, self.model.config.id2label
        entities = []
        for index, (token_id, special, (start, end)) in enumerate(
                zip(encoding["input_ids"], encoding["special_tokens_mask"], encoding["offset_mapping"])):
            if special:
                continue
            best = int(scores[index].argmax())
            word = self.tokenizer.convert_ids_to_tokens(token_id)
            if token_id == self.tokenizer.unk_token_id:
                word = encoding["sentence"][start:end]
            entities.append({"entity": labels[best], "score": float(scores[index, best]), "index": index,
                             "word": word, "start": start, "end": end})
        return entities
