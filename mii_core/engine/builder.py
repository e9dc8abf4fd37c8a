"""Builds an InferenceEngine from model options: checkpoint → policy → model → weights → KV cache."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from mii_core.config.engine import KVCacheMemoryConfig, StateManagerConfig
from mii_core.config.model import ModelConfig
from mii_core.distributed import init_parallel_context
from mii_core.distributed.parallel_context import ParallelContext
from mii_core.distributed.step_sync import agree_on_min
from mii_core.engine.inference_engine import InferenceEngine
from mii_core.engine.kv_dtype import prepare_kv_cache_dtype, with_value_layout
from mii_core.engine.model_runner import ModelRunner
from mii_core.kv_cache import KVCache, KVCacheShape, blocks_for_budget, default_block_size
from mii_core.kv_cache.manager import KVCacheManager
from mii_core.loading.checkpoint import read_hf_config, resolve_model_path
from mii_core.loading.prequantized import check_shipped_options, read_shipped_fp8
from mii_core.loading.weights import load_weights
from mii_core.model.ops import KernelSet
from mii_core.model.policy import ArchitecturePolicy
from mii_core.model.parameters import quantized_bytes
from mii_core.model.quantization import building_quantized
from mii_core.model.sharding import check_tensor_parallel, local_kv_heads
from mii_core.plugins import get_plugins
from mii_core.plugins.manager import ALLOW_ENV
from mii_core.scheduler.splitfuse import Scheduler

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class BuiltEngine:
    engine: InferenceEngine
    policy: ArchitecturePolicy
    model_path: Path
    ctx: ParallelContext


def available_devices() -> list[str]:
    """Device names this machine can run on, for error messages."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return names


def choose_device(config: ModelConfig, ctx: ParallelContext) -> torch.device:
    if config.device is None:
        if torch.cuda.is_available():
            return torch.device("cuda", ctx.local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    return check_device(config.device)


def check_device(name: str) -> torch.device:
    """The ``device`` option as a torch device that exists here; otherwise a ValueError listing those that do."""
    available = ", ".join(available_devices())
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={name!r} is not a device name; available here: {available}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device={name!r} is not supported; available here: {available}")
    if not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available on this machine (no GPU or no CUDA build "
                         f"of torch); use one of: {available}, or leave device unset")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s); "
                         f"use one of: {available}")
    return device


def choose_dtype(config: ModelConfig, policy: ArchitecturePolicy, device: torch.device) -> torch.dtype:
    if config.dtype != "auto":
        return _DTYPES[config.dtype]
    if device.type == "cpu":
        return torch.float32  # CPU half-precision matmuls are slow and less exact
    dtype = _DTYPES.get(policy.spec.checkpoint_dtype or "", torch.bfloat16)
    # quantizing is for speed: a float32 checkpoint then runs bfloat16 activations (dtype='float32' still can)
    return torch.bfloat16 if config.quantization_mode and dtype == torch.float32 else dtype


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


def build_engine(config: ModelConfig, ctx: Optional[ParallelContext] = None, show_progress: bool = True) -> BuiltEngine:
    """``ctx`` None: this process's rank from the launcher's environment (joining the process group when
    ``config.tensor_parallel`` > 1)."""
    model_path = resolve_model_path(config.model_name_or_path)
    policy = load_policy(model_path)  # a family's own refusals first (they name its formats)
    shipped = read_shipped_fp8(read_hf_config(model_path), model_path)  # None, or FP8 loaded as it is stored
    check_shipped_options(shipped, config.quantization_mode, config.tensor_parallel, model_path)
    check_tensor_parallel(policy.spec, config.tensor_parallel)  # before any rank loads a weight
    if ctx is None:
        device_type = check_device(config.device).type if config.device else available_devices()[-1].split(":")[0]
        ctx = init_parallel_context(config.tensor_parallel, device_type, config.torch_dist_port)
    device = choose_device(config, ctx)
    dtype = choose_dtype(config, policy, device)
    kernels = KernelSet(device.type, get_plugins().kernels)
    mode = None if shipped else config.quantization_mode  # shipped: its codes as they are, never re-quantized
    # the linears quantize their weights as they load, layer by layer (or take the shipped codes)
    with building_quantized(mode, shipped.layer_format(config.quantization_mode) if shipped else None):
        model = policy.build_model(ctx, kernels, device, dtype).eval()
    load_weights(model, policy, model_path, show_progress=show_progress and ctx.rank == 0,  # one bar, not N
                 shipped=shipped)
    if mode is not None or shipped:
        log.info("weights %s: %.3f GB in linear layers and experts",
                 f"quantized to {mode}" if mode else f"shipped in FP8 ({shipped.method})", quantized_bytes(model) / 1e9)
    state_config = config.inference_engine_config.state_manager
    spec = policy.spec
    cache_dtype = prepare_kv_cache_dtype(config.inference_engine_config.kv_cache_dtype, model, dtype, kernels, device)
    # the slot the family declares: KV heads, the key's and the value's features, or a value read from its key
    shape = KVCacheShape(spec.num_layers, local_kv_heads(spec.num_kv_heads, ctx.world_size), spec.head_dim,
                         state_config.kv_block_size or default_block_size(spec.head_dim), cache_dtype,
                         value_head_dim=spec.value_dim, value_in_key=spec.value_in_key)
    shape = with_value_layout(shape, kernels)
    # every rank must schedule the same cache: the smallest any rank can hold
    num_blocks = agree_on_min(ctx, kv_cache_blocks(shape, state_config.memory_config, device), device)
    engine = InferenceEngine(ModelRunner(model, allocate_kv_cache(shape, num_blocks, device), device),
                             Scheduler(kv_cache_manager(model, num_blocks, shape.block_size, state_config),
                                       state_config, restart_length=getattr(model, "restart_length", None)))
    log.info("KV cache: %d blocks of %d tokens = %d tokens in %s (%.2f GB; %d bytes a token: %d KV heads of %s)",
             num_blocks, shape.block_size, num_blocks * shape.block_size, str(cache_dtype).removeprefix("torch."),
             num_blocks * shape.bytes_per_block / 1e9, shape.bytes_per_token, shape.num_kv_heads, slot_text(shape))
    graph_batch = config.inference_engine_config.cuda_graph_max_batch_size
    if device.type == "cuda":
        engine.warm_up(policy.spec.max_position_embeddings)
    if device.type == "cuda" and graph_batch > 0:
        seconds = engine.capture_decode_graphs(graph_batch)
        log.info("captured CUDA graphs for decode batches %s in %.1f s", engine.graphs.sizes, seconds)
    return BuiltEngine(engine, policy, model_path, ctx)


def slot_text(shape: KVCacheShape) -> str:
    """What one KV head of a slot holds, for the log."""
    if shape.value_in_key:
        return f"{shape.head_dim} key features, the value its first {shape.value_dim}"
    values = f"{shape.value_dim} value features" + (" stored along the slots" if shape.slot_major_values else "")
    return f"{shape.head_dim} key + {values}"


def kv_cache_manager(model: torch.nn.Module, num_blocks: int, block_size: int,
                     config: StateManagerConfig) -> KVCacheManager:
    """The bookkeeping of the KV cache's blocks, for the scheduler to own. A sliding window every layer
    shares (the model's spec says, per build_model's contract) lets sequences free the blocks behind it,
    and then turns the prefix cache off; the model's ``prompt_variant`` keys cached blocks besides tokens."""
    return KVCacheManager(num_blocks, block_size, config, model.spec.kv_window, config.enable_prefix_caching,
                          model.prompt_variant)


def kv_cache_blocks(shape: KVCacheShape, memory: KVCacheMemoryConfig, device: torch.device) -> int:
    """Blocks the memory config gives; at least one, or a ValueError naming the option to change."""
    option = "inference_engine_config.state_manager.memory_config"
    if memory.mode == "reserve" and device.type == "cpu":
        raise ValueError(f"{option}.mode 'reserve' leaves accelerator memory free and has no meaning on CPU; "
                         "use mode 'fraction' with cpu_budget_bytes, or mode 'allocate' with size = blocks")
    num_blocks = blocks_for_budget(shape, memory, device)
    if num_blocks >= 1:
        return num_blocks
    block = f"one KV block takes {shape.bytes_per_block} bytes"
    if device.type == "cpu":
        raise ValueError(f"{option}.cpu_budget_bytes={memory.cpu_budget_bytes} is too small: {block}; raise it")
    if memory.mode == "reserve":
        raise ValueError(f"no accelerator memory left for the KV cache after reserving {option}.size="
                         f"{memory.size} bytes ({block}); lower size or free accelerator memory")
    raise ValueError(f"{option}.size={memory.gpu_fraction} of the free accelerator memory is less than one "
                     f"KV block ({block}); raise size or free accelerator memory")


def free_memory_bytes(device: torch.device) -> Optional[int]:
    """Memory that can still be allocated on ``device``; None where it cannot be asked."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def allocate_kv_cache(shape: KVCacheShape, num_blocks: int, device: torch.device) -> KVCache:
    """Checks the size first: on CPU an oversized allocation may not fail, but get the process killed."""
    needed = num_blocks * shape.bytes_per_block
    free = free_memory_bytes(device)
    advice = ("lower inference_engine_config.state_manager.memory_config.size (mode 'allocate': blocks) or "
              "cpu_budget_bytes on CPU")
    if free is not None and needed > free:
        raise ValueError(f"the KV cache of {num_blocks} blocks needs {needed} bytes but {device} has only {free} "
                         f"bytes free; {advice}")
    try:
        return KVCache(shape, num_blocks, device)
    except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        raise ValueError(f"could not allocate the KV cache of {num_blocks} blocks ({needed} bytes) on {device}: "
                         f"{exc}; {advice}") from None
