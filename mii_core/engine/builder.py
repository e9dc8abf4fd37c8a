"""Builds an InferenceEngine from model options: checkpoint → policy → model → weights → KV cache."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from mii_core.config.model import ModelConfig
from mii_core.engine.inference_engine import InferenceEngine
from mii_core.kv_cache import KVCache, KVCacheShape, blocks_for_budget, default_block_size
from mii_core.loading.checkpoint import read_hf_config, resolve_model_path
from mii_core.loading.weights import load_weights
from mii_core.model.ops import KernelSet
from mii_core.model.parallel import ParallelContext
from mii_core.model.policy import ArchitecturePolicy
from mii_core.plugins import get_plugins
from mii_core.plugins.manager import ALLOW_ENV

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class BuiltEngine:
    engine: InferenceEngine
    policy: ArchitecturePolicy
    model_path: Path


def choose_device(config: ModelConfig, ctx: ParallelContext) -> torch.device:
    if config.device is not None:
        return torch.device(config.device)
    if torch.cuda.is_available():
        return torch.device("cuda", ctx.rank % torch.cuda.device_count())
    return torch.device("cpu")


def choose_dtype(config: ModelConfig, policy: ArchitecturePolicy, device: torch.device) -> torch.dtype:
    if config.dtype != "auto":
        return _DTYPES[config.dtype]
    if device.type == "cpu":
        return torch.float32  # CPU half-precision matmuls are slow and less exact
    return _DTYPES.get(policy.spec.checkpoint_dtype or "", torch.bfloat16)


def load_policy(model_path: Path) -> ArchitecturePolicy:
    hf_config = read_hf_config(model_path)
    model_type = hf_config.get("model_type")
    if not model_type:
        raise ValueError(f"{model_path}/config.json has no model_type")
    plugins = get_plugins()
    try:
        policy_cls = plugins.architectures.load(model_type)
    except ValueError as exc:
        if not plugins.skipped:
            raise
        raise ValueError(f"{exc}. Note: {ALLOW_ENV}={os.environ.get(ALLOW_ENV)} kept these installed plugins "
                         f"from loading: {', '.join(plugins.skipped)}") from None
    return policy_cls(hf_config)


def build_engine(config: ModelConfig, ctx: ParallelContext = ParallelContext(), show_progress: bool = True) -> BuiltEngine:
    model_path = resolve_model_path(config.model_name_or_path)
    policy = load_policy(model_path)
    device = choose_device(config, ctx)
    dtype = choose_dtype(config, policy, device)
    kernels = KernelSet(device.type, get_plugins().kernels)
    model = policy.build_model(ctx, kernels, device, dtype).eval()
    load_weights(model, policy, model_path, show_progress=show_progress)
    state_config = config.inference_engine_config.state_manager
    spec = policy.spec
    shape = KVCacheShape(spec.num_layers, spec.num_kv_heads // ctx.world_size, spec.head_dim,
                         state_config.kv_block_size or default_block_size(spec.head_dim), dtype)
    num_blocks = blocks_for_budget(shape, state_config.memory_config, device)
    if num_blocks < 1:
        raise ValueError(f"no memory left for the KV cache ({shape.bytes_per_block} bytes a block); lower "
                         "memory_config.size in 'reserve' mode or free accelerator memory")
    prefix_caching = state_config.enable_prefix_caching and getattr(spec, "sliding_window", None) is None
    engine = InferenceEngine(model, KVCache(shape, num_blocks, device), state_config, device, prefix_caching)
    log.info("KV cache: %d blocks of %d tokens (%.2f GB)", num_blocks, shape.block_size,
             num_blocks * shape.bytes_per_block / 1e9)
    graph_batch = config.inference_engine_config.cuda_graph_max_batch_size
    if device.type == "cuda" and graph_batch > 0:
        seconds = engine.capture_decode_graphs(graph_batch)
        log.info("captured CUDA graphs for decode batches %s in %.1f s", engine.graphs.sizes, seconds)
    return BuiltEngine(engine, policy, model_path)
