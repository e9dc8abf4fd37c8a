"""zero-shot-image-classification with CLIP, as HF's pipeline answers it: each candidate label is put in
the hypothesis template, and the image's similarity logits over its own labels are soft-maxed.

A batch holds every query's image and all their labels' texts: one forward pass scores every image
against every text, and each query reads its own image's row over its own labels' columns."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import transformers

from mii_core.legacy.task import Prepared, QueryError, TaskModel
from mii_tasks_vision.images import decode_image

HYPOTHESIS_TEMPLATE = "This is a photo of {}."  # MII's and HF's


@dataclass(frozen=True, slots=True)
class _Query:
    pixel_values: torch.Tensor  # [1, 3, H, W]
    input_ids: list[list[int]]  # one token list per candidate label
    labels: list[str]


@dataclass(frozen=True, slots=True)
class _Batch:
    inputs: dict[str, torch.Tensor]
    label_columns: list[slice]  # each query's labels among the batch's texts


class ZeroShotImageClassification(TaskModel):
    """Query ``{"image": ..., "candidate_labels": [...]}`` → ``[{"score", "label"}]``, best first."""

    required_keys = ("image", "candidate_labels")
    image_keys = ("image",)
    option_names = ("hypothesis_template",)

    def __init__(self, task: str, model: Any, processor: Any, device: str) -> None:
        super().__init__(task)
        self.model, self.processor, self.device = model, processor, device

    @classmethod
    def load(cls, model_dir: Path, *, task: str, device: str, dtype: Any) -> "ZeroShotImageClassification":
        processor = transformers.AutoProcessor.from_pretrained(model_dir)
        model = transformers.AutoModelForZeroShotImageClassification.from_pretrained(model_dir, dtype=dtype)
        return cls(task, model.to(device).eval(), processor, device)

    @property
    def max_length(self) -> int:
        return min(self.model.config.text_config.max_position_embeddings, self.processor.tokenizer.model_max_length)

    def prepare(self, query: Mapping[str, Any], options: Mapping[str, Any]) -> Prepared:
        labels = self._labels(query["candidate_labels"])
        template = options.get("hypothesis_template", HYPOTHESIS_TEMPLATE)
        if not isinstance(template, str) or "{}" not in template:
            raise QueryError(f"the {self.task} option 'hypothesis_template' must be a string holding '{{}}', "
                             f"got {template!r}")
        input_ids = self.processor.tokenizer([template.format(label) for label in labels])["input_ids"]
        longest = max(len(ids) for ids in input_ids)
        if longest > self.max_length:
            raise QueryError(f"a {self.task} candidate label makes {longest} tokens; this model takes at most "
                             f"{self.max_length}")
        image = decode_image(query["image"], self.task, "image")
        pixel_values = self.processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
        return Prepared(longest, _Query(pixel_values, input_ids, labels), options)

    def _labels(self, value: Any) -> list[str]:
        labels = value
        if not isinstance(labels, (list, tuple)) or not labels:
            raise QueryError(f"the {self.task} query's 'candidate_labels' must be a non-empty list of strings, "
                             f"got {value!r}")
        if not all(isinstance(label, str) and label for label in labels):
            raise QueryError(f"the {self.task} query's 'candidate_labels' must all be non-empty strings, "
                             f"got {labels!r}")
        return list(labels)

    def collate(self, prepared: Sequence[Prepared], pad_to: int) -> _Batch:
        queries = [p.data for p in prepared]
        texts = [{"input_ids": ids} for q in queries for ids in q.input_ids]
        text_inputs = self.processor.tokenizer.pad(texts, padding="max_length", max_length=pad_to,
                                                   return_tensors="pt")
        columns, start = [], 0
        for query in queries:
            columns.append(slice(start, start + len(query.labels)))
            start += len(query.labels)
        pixel_values = torch.cat([q.pixel_values for q in queries]).to(self.device, self.model.dtype)
        inputs = {"pixel_values": pixel_values, **{k: v.to(self.device) for k, v in text_inputs.items()}}
        return _Batch(inputs, columns)

    def run(self, batch: _Batch) -> Any:
        with torch.inference_mode():
            return self.model(**batch.inputs).logits_per_image, batch.label_columns

    def respond(self, prepared: Prepared, outputs: Any, row: int) -> Any:
        logits, columns = outputs
        scores = logits[row, columns[row]].float().softmax(dim=-1).tolist()
        ranked = sorted(zip(scores, prepared.data.labels), key=lambda pair: -pair[0])
        return [{"score": score, "label": label} for score, label in ranked]
