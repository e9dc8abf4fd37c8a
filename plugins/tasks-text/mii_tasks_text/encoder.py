"""What every encoder task shares: loading, tokenizing one query, padding a batch, one forward pass
(replayed from CUDA graphs with ``enable_cuda_graph``: ``bucketed_forward.py``)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy
import torch
import transformers

from mii_core.legacy.static_calls import CudaGraphCapture
from mii_core.legacy.task import Prepared, QueryError, TaskModel
from mii_tasks_text.bucketed_forward import BucketedForward, Capture

log = logging.getLogger(__name__)
# RoBERTa-style models number positions from pad_token_id + 1, so they hold that many fewer tokens
POSITION_OFFSET_TYPES = ("roberta", "xlm-roberta")
# the model types whose HF forward pass was read for host synchronisation (none with an attention mask given)
GRAPH_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert")
# flash attention unpads the batch by the mask's contents (a host sync), which no graph can hold
GRAPH_ATTENTION = ("sdpa", "eager")


class EncoderTask(TaskModel):
    """An HF ``AutoModelFor...`` (``auto_class``) and its fast tokenizer; queries are texts under ``"query"``."""

    auto_class: ClassVar[str] = "AutoModel"
    required_keys = ("query",)

    def __init__(self, task: str, model: Any, tokenizer: Any, device: str) -> None:
        super().__init__(task)
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.bucketed: Optional[BucketedForward] = None  # set by enable_cuda_graph

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

    def enable_cuda_graph(self) -> None:
        refusal = self.graph_refusal()
        if refusal is not None:
            log.warning("enable_cuda_graph ignored for %s: %s", self.task, refusal)
            return
        self.use_static_calls(CudaGraphCapture(self.device))
        log.info("enable_cuda_graph: the %s encoder's forward pass is captured per (batch bucket, length) on "
                 "first use", self.task)

    def graph_refusal(self) -> Optional[str]:
        """Why this task model cannot capture its forward pass in CUDA graphs, or None when it can."""
        if not str(self.device).startswith("cuda"):
            return f"CUDA graphs need a CUDA device, this deployment runs on {self.device}"
        model_type = self.model.config.model_type
        if model_type not in GRAPH_MODEL_TYPES:
            return (f"the model type '{model_type}' is not one whose forward pass is known to be capturable "
                    f"({', '.join(GRAPH_MODEL_TYPES)})")
        attention = getattr(self.model.config, "_attn_implementation", None)
        if attention not in GRAPH_ATTENTION:
            return (f"the model's attention implementation '{attention}' syncs with the host; load it with "
                    f"one of {', '.join(GRAPH_ATTENTION)}")
        return None

    def use_static_calls(self, capture: Capture) -> None:
        """Every later forward pass runs padded up to a batch bucket through static calls ``capture`` makes
        (``CudaGraphCapture``; ``EagerCapture`` runs the same path on a CPU)."""
        self.bucketed = BucketedForward(self.model, capture)

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
        """The model's inputs padded on the right to ``pad_to`` with the values ``tokenizer.pad`` uses, each
        key filled into one array: ``tokenizer.pad``'s own list-to-tensor conversion took a third of a
        replica's Python time under load. A key without a known pad value goes through ``tokenizer.pad``."""
        keys = [k for k in self.tokenizer.model_input_names if k in prepared[0].data]
        pad_values = {"input_ids": self.tokenizer.pad_token_id, "attention_mask": 0,
                      "token_type_ids": self.tokenizer.pad_token_type_id}
        if not set(keys) <= set(pad_values):
            rows = [{k: p.data[k] for k in keys} for p in prepared]
            batch = self.tokenizer.pad(rows, padding="max_length", max_length=pad_to, return_tensors="pt")
            return {k: v.to(self.device) for k, v in batch.items()}
        batch = {}
        for key in keys:
            rows = numpy.full((len(prepared), pad_to), pad_values[key], dtype=numpy.int64)
            for row, query in enumerate(prepared):
                values = query.data[key]
                rows[row, :len(values)] = values
            batch[key] = torch.from_numpy(rows).to(self.device)
        return batch

    def run(self, batch: dict[str, torch.Tensor]) -> Any:
        with torch.inference_mode():  # the graphs' buffers too are made and filled in inference mode
            outputs = self.bucketed(batch) if self.bucketed is not None else self.model(**batch)
            return self.host_outputs(outputs, batch)

    def host_outputs(self, outputs: Any, batch: dict[str, torch.Tensor]) -> Any:
        """What ``respond`` reads, in float32 on the host (as HF pipelines read fp16/bf16 outputs): one
        transfer per field and batch, where a ``.cpu()`` per query made every query wait on the device."""
        return type(outputs)(**{name: value.float().cpu() for name, value in outputs.items()})

    @staticmethod
    def row_logits(logits: torch.Tensor, prepared: Prepared, row: int) -> torch.Tensor:
        """This query's logits, padding cut off (``host_outputs`` made them float32, on the host)."""
        return logits[row, :prepared.length]
