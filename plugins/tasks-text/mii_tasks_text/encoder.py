"""What every encoder task shares: loading, tokenizing one query, padding a batch, one forward pass."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import torch
import transformers

from mii_core.legacy.task import Prepared, QueryError, TaskModel

# RoBERTa-style models number positions from pad_token_id + 1, so they hold that many fewer tokens
POSITION_OFFSET_TYPES = ("roberta", "xlm-roberta")


class EncoderTask(TaskModel):
    """An HF ``AutoModelFor...`` (``auto_class``) and its fast tokenizer; queries are texts under ``"query"``."""

    auto_class: ClassVar[str] = "AutoModel"
    required_keys = ("query",)

    def __init__(self, task: str, model: Any, tokenizer: Any, device: str) -> None:
        super().__init__(task)
        self.model, self.tokenizer, self.device = model, tokenizer, device

    @classmethod
    def load(cls, model_dir: Path, *, task: str, device: str, dtype: Any) -> "EncoderTask":
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
        tokenizer.padding_side = "right"  # respond() reads a query's rows as the first `length` of its row
        model_class = getattr(transformers, cls.auto_class)
        model = model_class.from_pretrained(model_dir, dtype=dtype).to(device).eval()
        return cls(task, model, tokenizer, device)

    @property
    def max_length(self) -> int:
        config = self.model.config
        offset = config.pad_token_id + 1 if config.model_type in POSITION_OFFSET_TYPES else 0
        return min(config.max_position_embeddings - offset, self.tokenizer.model_max_length)

    def text(self, query: Mapping[str, Any], key: str) -> str:
        value = query[key]
        if not isinstance(value, str) or not value:
            raise QueryError(f"the {self.task} query's '{key}' must be a non-empty string, got {value!r}")
        return value

    def encode(self, *texts: str, **tokenizer_options: Any) -> Any:
        """Token ids (no padding) of one text or a pair; too many tokens is this query's error."""
        encoding = self.tokenizer(*texts, **tokenizer_options)
        if len(encoding["input_ids"]) > self.max_length:
            raise QueryError(f"the {self.task} query has {len(encoding['input_ids'])} tokens; this model takes "
                             f"at most {self.max_length}")
        return encoding

    def prepare(self, query: Mapping[str, Any], options: Mapping[str, Any]) -> Prepared:
        encoding = self.encode(self.text(query, "query"), return_special_tokens_mask=True,
                               return_offsets_mapping=True)
        return Prepared(len(encoding["input_ids"]), encoding, options)

    def collate(self, prepared: Sequence[Prepared], pad_to: int) -> dict[str, torch.Tensor]:
        model_keys = self.tokenizer.model_input_names
        rows = [{k: v for k, v in p.data.items() if k in model_keys} for p in prepared]
        batch = self.tokenizer.pad(rows, padding="max_length", max_length=pad_to, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    def run(self, batch: dict[str, torch.Tensor]) -> Any:
        with torch.inference_mode():
            return self.model(**batch)

    @staticmethod
    def row_logits(logits: torch.Tensor, prepared: Prepared, row: int) -> torch.Tensor:
        """This query's logits, padding cut off, in float32 (as HF pipelines read fp16/bf16 outputs)."""
        return logits[row, :prepared.length].float().cpu()
