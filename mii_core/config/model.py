"""Model options of ``mii_core.pipeline`` / ``mii_core.serve`` (MII's names and defaults)."""
from __future__ import annotations

import os
from typing import Any, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from mii_core.config.base import StrictModel
from mii_core.config.engine import EngineConfig

DeviceMap = Union[Literal["auto"], int, list[int], list[list[int]], dict[str, list[list[int]]]]


class ModelConfig(StrictModel):
    model_name_or_path: str = Field(min_length=1)
    tokenizer: Optional[str] = None
    tensor_parallel: int = Field(default_factory=lambda: int(os.getenv("WORLD_SIZE", "1")), gt=0)
    quantization_mode: Optional[str] = None
    inference_engine_config: EngineConfig = Field(default_factory=EngineConfig)
    torch_dist_port: int = Field(default=29500, gt=0, lt=65536)
    replica_num: int = Field(default=1, gt=0)
    device_map: DeviceMap = "auto"
    max_length: Optional[int] = Field(default=None, gt=0)
    all_rank_output: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Optional[str] = Field(default=None, description="None: cuda when available, else cpu")

    @field_validator("inference_engine_config", mode="before")
    @classmethod
    def _engine_from_dict(cls, value: Any) -> Any:
        return EngineConfig() if value is None else value

    @model_validator(mode="after")
    def _check_supported(self) -> "ModelConfig":
        if self.quantization_mode is not None:
            raise ValueError("quantization_mode is not supported yet; leave it unset (None)")
        if self.tokenizer is None:
            self.tokenizer = self.model_name_or_path
        return self
