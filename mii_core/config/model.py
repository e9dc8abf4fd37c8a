"""Model options of ``mii_core.pipeline`` / ``mii_core.serve`` (MII's names and defaults)."""
from __future__ import annotations

import os
from typing import Any, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from mii_core.config.base import StrictModel
from mii_core.config.chat_template import chat_template_text
from mii_core.config.engine import EngineConfig, check_quantization_mode
from mii_core.config.replicas import ReplicaConfig

DeviceMap = Union[Literal["auto"], int, list[int], list[list[int]], dict[str, list[list[int]]]]
WORLD_SIZE_ENV = "WORLD_SIZE"


def world_size_from_env() -> int:
    """tensor_parallel's default (MII's): the launcher's $WORLD_SIZE, else 1."""
    raw = os.getenv(WORLD_SIZE_ENV, "1")
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"environment variable {WORLD_SIZE_ENV}={raw!r} must be a positive integer (it sets "
                         f"tensor_parallel's default); fix or unset it, or pass tensor_parallel explicitly")
    return value


class ModelConfig(StrictModel):
    model_name_or_path: str = Field(min_length=1)
    tokenizer: Optional[str] = None
    task: Literal["text-generation"] = Field(default="text-generation", description="MII's option; one task")
    tensor_parallel: int = Field(default_factory=world_size_from_env, gt=0)
    quantization_mode: Optional[str] = None
    inference_engine_config: EngineConfig = Field(default_factory=EngineConfig)
    torch_dist_port: int = Field(default=29500, gt=0, lt=65536)
    replica_num: int = Field(default=1, gt=0)
    device_map: DeviceMap = "auto"
    # MII's: filled by MIIConfig.generate_replica_configs (one per replica)
    replica_configs: list[ReplicaConfig] = Field(default_factory=list)
    max_length: Optional[int] = Field(default=None, gt=0)
    all_rank_output: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Optional[str] = Field(default=None, description="None: cuda when available, else cpu")
    # vLLM's --chat-template: a Jinja template, or the path of a file holding one; replaces the tokenizer's
    chat_template: Optional[str] = Field(default=None, min_length=1)
    # vLLM's --tool-call-parser: how chat output is read for tool calls under tool_choice "auto" (the format
    # the model's chat template teaches it); None: "auto" with tools is refused, naming this option
    tool_call_parser: Optional[Literal["hermes", "llama3_json"]] = None

    @field_validator("model_name_or_path", "tokenizer", mode="before")
    @classmethod
    def _path_as_str(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("chat_template", mode="after")
    @classmethod
    def _chat_template_text(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else chat_template_text(value)

    @field_validator("inference_engine_config", mode="before")
    @classmethod
    def _engine_from_dict(cls, value: Any) -> Any:
        return EngineConfig() if value is None else value

    @model_validator(mode="after")
    def _check_supported(self) -> "ModelConfig":
        self._agree_on_quantization()
        tp_size = self.inference_engine_config.tensor_parallel.tp_size
        if tp_size not in (1, self.tensor_parallel):
            raise ValueError(f"inference_engine_config.tensor_parallel.tp_size={tp_size} differs from tensor_parallel="
                             f"{self.tensor_parallel}; set the model option tensor_parallel (and launch that many "
                             "ranks) and leave tp_size out")
        if self.tokenizer is None:
            self.tokenizer = self.model_name_or_path
        return self

    def _agree_on_quantization(self) -> None:
        """The model option and DeepSpeed's key name one mode: either may be set, both only alike; the
        other is filled in, so readers may use either."""
        check_quantization_mode("quantization_mode", self.quantization_mode)
        deepspeed = self.inference_engine_config.quantization
        if None not in (self.quantization_mode, deepspeed.quantization_mode) and \
                self.quantization_mode != deepspeed.quantization_mode:
            raise ValueError(f"quantization_mode={self.quantization_mode!r} differs from inference_engine_config."
                             f"quantization.quantization_mode={deepspeed.quantization_mode!r}; set one of them")
        mode = self.quantization_mode or deepspeed.quantization_mode
        if self.quantization_mode != mode:  # assigning validates again: only when it changes
            self.quantization_mode = mode
        if deepspeed.quantization_mode != mode:
            deepspeed.quantization_mode = mode

    @model_validator(mode="after")
    def _one_config_per_replica(self) -> "ModelConfig":
        if self.replica_configs and len(self.replica_configs) != self.replica_num:
            raise ValueError(f"replica_configs holds {len(self.replica_configs)} config(s) but replica_num="
                             f"{self.replica_num}; give one per replica, or leave replica_configs out")
        return self
