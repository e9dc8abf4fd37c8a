"""``mii_config`` of a legacy deployment: MII Legacy's names, plus the dynamic batcher's knobs."""
from __future__ import annotations

from typing import Any, Optional

from pydantic import Field, field_validator, model_validator

from mii_core.config.base import StrictModel

# MII's DtypeEnum spellings -> the torch dtype name
DTYPES = {"fp32": "float32", "float32": "float32", "float": "float32", "torch.float32": "float32",
          "fp16": "float16", "float16": "float16", "half": "float16", "torch.float16": "float16",
          "bf16": "bfloat16", "bfloat16": "bfloat16", "torch.bfloat16": "bfloat16"}


SERVING_FIELDS = ("port_number", "enable_restful_api", "restful_api_host", "restful_api_port", "restful_processes",
                  "transports", "host", "api_key", "startup_timeout", "max_queued_requests")


class LegacyConfig(StrictModel):
    """What ``mii_core.legacy.deploy(..., mii_config={...})`` accepts; unknown keys are an error naming them."""

    dtype: str = "fp32"  # MII Legacy's default
    device: Optional[str] = None  # None: "cuda" when available, else "cpu"
    enable_cuda_graph: bool = False  # MII's name: the task model captures CUDA graphs, or logs why it cannot
    tensor_parallel: int = Field(1, ge=1, le=1)  # one device per legacy deployment in this release
    replica_num: int = Field(1, ge=1, le=1)
    # ---- a local (persistent) deployment's serving options: MII's names, as mii_core.serve() takes them ----
    port_number: int = Field(50050, gt=0, lt=65536)  # the gRPC front end (MII's)
    enable_restful_api: bool = False  # adds the REST front end (POST /mii/<deployment>, /v1/embeddings)
    restful_api_host: str = "localhost"
    restful_api_port: int = Field(51080, gt=0, lt=65536)
    restful_processes: int = Field(32, ge=1)
    transports: Optional[list[str]] = None  # None: gRPC (MII's), plus REST when enabled
    host: str = "localhost"  # where the gRPC front end listens
    api_key: Optional[str] = Field(None, min_length=1)
    startup_timeout: float = Field(600.0, gt=0)
    max_queued_requests: int = Field(1024, gt=0)
    trust_remote_code: bool = False
    pipeline_kwargs: dict[str, Any] = {}  # default options of every query (query(..., **options) wins)
    max_tokens: int = Field(1024, gt=0)  # MII's limit on prompt + generated tokens (accepted; the model's own applies)
    # the dynamic batcher (ours)
    max_batch_size: int = Field(32, gt=0)  # queries per forward pass
    batch_wait_ms: float = Field(5.0, ge=0)  # how long the first query of a batch waits for others (under load)
    length_buckets: list[int] = [16, 32, 64, 128, 256]  # padded lengths (the model's limit is added)

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in DTYPES:
            raise ValueError(f"dtype '{value}' is not one of {sorted(DTYPES)}")
        return value

    @model_validator(mode="after")
    def _buckets_positive(self) -> "LegacyConfig":
        if not self.length_buckets or any(b <= 0 for b in self.length_buckets):
            raise ValueError(f"length_buckets must be positive token counts, got {self.length_buckets}")
        return self

    def serving_options(self) -> dict[str, Any]:
        """The options a local deployment hands to ``mii_core.config.MIIConfig`` (same names there)."""
        return {name: getattr(self, name) for name in SERVING_FIELDS}

    def torch_dtype(self) -> Any:
        import torch  # here: reading a config must not load torch

        return getattr(torch, DTYPES[self.dtype])

    def torch_device(self) -> str:
        if self.device is not None:
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
