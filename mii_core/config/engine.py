"""Engine knobs, shaped like DeepSpeed's RaggedInferenceEngineConfig (``inference_engine_config``)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from mii_core.config.base import StrictModel


class KVCacheMemoryConfig(StrictModel):
    """How much memory the blocked KV cache takes.

    ``fraction``: that share of the accelerator memory still free after the weights are loaded
    (on CPU: ``cpu_budget_bytes``). ``reserve``: leave ``size`` bytes free, take the rest (DeepSpeed's
    default mode). ``allocate``: exactly ``size`` blocks, on any device.
    """

    mode: Literal["fraction", "reserve", "allocate"] = "fraction"
    size: Optional[float] = Field(default=None, gt=0)
    cpu_budget_bytes: int = Field(default=512 * 2**20, gt=0)

    @model_validator(mode="after")
    def _check_size(self) -> "KVCacheMemoryConfig":
        if self.mode == "allocate" and (self.size is None or self.size < 1):
            raise ValueError("memory_config.mode 'allocate' needs size = number of KV blocks (>= 1)")
        if self.mode == "fraction" and self.size is not None and self.size > 1:
            raise ValueError("memory_config.mode 'fraction' needs 0 < size <= 1")
        return self

    @property
    def gpu_fraction(self) -> float:
        return self.size if self.mode == "fraction" and self.size is not None else 0.9


class StateManagerConfig(StrictModel):
    max_tracked_sequences: int = Field(default=2048, gt=0)
    max_ragged_batch_size: int = Field(default=768, gt=0, description="tokens in one forward pass")
    max_ragged_sequence_count: int = Field(default=512, gt=0, description="sequences in one forward pass")
    max_context: int = Field(default=8192, gt=0, description="longest sequence (prompt + output)")
    kv_block_size: Optional[int] = Field(default=None, gt=0, description="None: 64 for head size > 64, else 128")
    memory_config: KVCacheMemoryConfig = Field(default_factory=KVCacheMemoryConfig)
    # full KV blocks are shared between sequences with the same prefix (off for sliding-window models)
    enable_prefix_caching: bool = True


class TensorParallelConfig(StrictModel):
    tp_size: int = Field(default=1, gt=0)


class EngineConfig(StrictModel):
    tensor_parallel: TensorParallelConfig = Field(default_factory=TensorParallelConfig)
    state_manager: StateManagerConfig = Field(default_factory=StateManagerConfig)
    # decode steps of up to this many sequences replay CUDA graphs captured at start-up (0: never)
    cuda_graph_max_batch_size: int = Field(default=256, ge=0)
