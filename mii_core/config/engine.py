"""Engine knobs, shaped like DeepSpeed's RaggedInferenceEngineConfig (``inference_engine_config``).

DeepSpeed keys that mii-core does not honour yet (``state_manager.offload``) are recognised and refused, never ignored.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import Field, StrictInt, model_validator

from mii_core.config.base import StrictModel


def refuse_unsupported(option: str, value: Any, default: Any, coming: str) -> None:
    """One message shape for a DeepSpeed option that is recognised but not implemented yet."""
    if value != default:
        raise ValueError(f"{option}={value!r} is not supported yet ({coming}); leave it at {default!r}")


# weight quantization modes (MII's names): "fp8" FP8 e4m3 weights and, for steps of many tokens, activations;
# "wf8af16" FP8 e4m3 weights only; "wf6af16" 6-bit e3m2 float weights only (FP6-LLM's format)
QUANTIZATION_MODES = ("fp8", "wf8af16", "wf6af16")


def check_quantization_mode(option: str, mode: Optional[str]) -> None:
    """An unknown mode is a ValueError listing the valid ones."""
    if mode is not None and mode not in QUANTIZATION_MODES:
        raise ValueError(f"{option}={mode!r} is not a quantization mode; choose one of "
                         f"{', '.join(QUANTIZATION_MODES)} (or leave it unset for none)")


class KVCacheMemoryConfig(StrictModel):
    """How much memory the blocked KV cache takes.

    ``fraction``: that share of the accelerator memory still free after the weights are loaded
    (on CPU: ``cpu_budget_bytes``). ``reserve``: leave ``size`` bytes of accelerator memory free, take
    the rest (DeepSpeed's default mode; accelerators only). ``allocate``: exactly ``size`` blocks (an
    integer), on any device.
    """

    mode: Literal["fraction", "reserve", "allocate"] = "fraction"
    # StrictInt first: 5 stays an int (a block count), 1.7 stays a float (and is refused for 'allocate')
    size: Optional[Union[StrictInt, float]] = Field(default=None, gt=0, allow_inf_nan=False)
    cpu_budget_bytes: int = Field(default=512 * 2**20, gt=0)

    @model_validator(mode="after")
    def _check_size(self) -> "KVCacheMemoryConfig":
        if self.mode == "allocate" and not (isinstance(self.size, int) and self.size >= 1):
            raise ValueError(f"memory_config.mode 'allocate' needs size = a whole number of KV blocks (>= 1), "
                             f"got size={self.size!r}")
        if self.mode == "fraction" and self.size is not None and self.size > 1:
            raise ValueError(f"memory_config.mode 'fraction' needs 0 < size <= 1, got size={self.size!r}")
        return self

    @property
    def gpu_fraction(self) -> float:
        return self.size if self.mode == "fraction" and self.size is not None else 0.9


class StateManagerConfig(StrictModel):
    max_tracked_sequences: int = Field(default=2048, gt=0)
    # DeepSpeed's default is 768. vLLM takes 8,192 tokens per step for serving on an 80 GB GPU; on the
    # H100 8,192 measured W1 +2% and W3 +4% over 2,048, and 2,048 W1 +17% and W3 2.4x over 768 (RESULTS.md).
    # A larger step delays running decodes while a long prompt goes in: lower it for latency.
    max_ragged_batch_size: int = Field(default=8192, gt=0, description="tokens in one forward pass")
    max_ragged_sequence_count: int = Field(default=512, gt=0, description="sequences in one forward pass")
    max_context: int = Field(default=8192, gt=0, description="longest sequence (prompt + output)")
    kv_block_size: Optional[int] = Field(default=None, gt=0, description="None: 64 for head size > 64, else 128")
    memory_config: KVCacheMemoryConfig = Field(default_factory=KVCacheMemoryConfig)
    # full KV blocks are shared between sequences with the same prefix (off for sliding-window models)
    enable_prefix_caching: bool = True
    # vLLM's scheduling policies: "fcfs" (arrival order) or "priority" (requests' `priority`, lower first, then
    # arrival: the waiting queue's order and, when blocks run out, the running request preempted first)
    scheduling_policy: Literal["fcfs", "priority"] = "fcfs"
    offload: bool = Field(default=False, description="DeepSpeed's KV-cache offload; not supported yet")

    @model_validator(mode="after")
    def _check_supported(self) -> "StateManagerConfig":
        refuse_unsupported("inference_engine_config.state_manager.offload", self.offload, False,
                           "the KV cache stays on the device")
        return self


class TensorParallelConfig(StrictModel):
    """DeepSpeed's key; the model option ``tensor_parallel`` sets the split (ModelConfig checks they agree)."""
    tp_size: int = Field(default=1, gt=0)


class QuantizationConfig(StrictModel):
    """DeepSpeed's ``quantization`` key; the same modes as the model option ``quantization_mode``
    (ModelConfig checks that the two agree)."""
    quantization_mode: Optional[str] = None

    @model_validator(mode="after")
    def _check_mode(self) -> "QuantizationConfig":
        check_quantization_mode("inference_engine_config.quantization.quantization_mode", self.quantization_mode)
        return self


class EngineConfig(StrictModel):
    tensor_parallel: TensorParallelConfig = Field(default_factory=TensorParallelConfig)
    state_manager: StateManagerConfig = Field(default_factory=StateManagerConfig)
    quantization: QuantizationConfig = Field(default_factory=QuantizationConfig)
    # decode steps of up to this many sequences replay CUDA graphs captured at start-up (0: never)
    cuda_graph_max_batch_size: int = Field(default=256, ge=0)
    # the host schedules decode step n+1 and launches it, fed step n's greedy tokens on the device, before
    # it reads step n's tokens (vLLM's async scheduling). None: on for one rank on a GPU, off otherwise.
    async_scheduling: Optional[bool] = None
    # what the KV cache stores K and V in: "auto" the model's dtype; "fp8" (vLLM's alias "fp8_e4m3")
    # float8 e4m3 with per-head scales (mii_core/kv_cache/fp8.py), about twice the tokens in the same memory
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3"] = "auto"
