"""Our engine as the benchmark drives it: start-up (timed apart), the token-level call, what it reports about
itself, and the prefix-caching option (detected: it may not exist yet)."""

import copy
import json
import time

from phases import sync

PREFIX_OPTION = "enable_prefix_caching"  # inference_engine_config.state_manager.<this>, issue 8


def prefix_caching_support():
    """(available, default, note): whether inference_engine_config accepts state_manager.enable_prefix_caching
    and what it defaults to; asked of the config model, so no engine is built."""
    try:
        from mii_core.config.engine import EngineConfig
        default = getattr(EngineConfig().state_manager, PREFIX_OPTION, None)
        EngineConfig.model_validate({"state_manager": {PREFIX_OPTION: True}})
    except Exception as e:  # noqa: BLE001 - an unknown option is a validation error; a moved module an import one
        return False, None, f"not available: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
    return True, bool(default), f"available, default {bool(default)}"


def with_prefix_caching(engine_kwargs, on):
    """engine_kwargs (as given on the command line) with state_manager.enable_prefix_caching set."""
    kw = copy.deepcopy(engine_kwargs)
    sm = kw.setdefault("inference_engine_config", {}).setdefault("state_manager", {})
    sm[PREFIX_OPTION] = on
    return kw


def with_kv_cache_dtype(engine_kwargs, kv_cache_dtype):
    """engine_kwargs with inference_engine_config.kv_cache_dtype set."""
    kw = copy.deepcopy(engine_kwargs)
    kw.setdefault("inference_engine_config", {})["kv_cache_dtype"] = kv_cache_dtype
    return kw


def start(path, engine_kwargs, extra=None):
    """Builds the pipeline; the time is start-up (weights loaded, any warm-up or graph capture the engine does)."""
    import mii_core
    sync()
    t = time.perf_counter()
    pipe = mii_core.pipeline(path, **{**engine_kwargs, **(extra or {})})
    sync()
    return pipe, time.perf_counter() - t


def caller(pipe, **generate_kwargs):
    """call(prompts, max_new) -> (seconds, output tokens counted up to the request, requests cut short);
    generate_kwargs go with every request (e.g. logprobs=5)."""
    def call(prompts, max_new):
        sync()
        t = time.perf_counter()
        res = pipe.generate_tokens(prompts, max_new_tokens=max_new, ignore_eos=True, do_sample=False,
                                   **generate_kwargs)
        sync()
        secs = time.perf_counter() - t
        want = max_new if isinstance(max_new, list) else [max_new] * len(prompts)
        assert len(res) == len(prompts), f"{len(res)} results for {len(prompts)} prompts"
        got = [len(r.token_ids) for r in res]
        return secs, sum(min(g, w) for g, w in zip(got, want)), sum(g < w for g, w in zip(got, want))
    return call


def facts(pipe):
    """What the engine says about itself (best effort: attribute names may change) and the device memory."""
    import torch
    out = {}
    kv = getattr(getattr(pipe, "engine", None), "kv_cache", None)
    if kv is not None:
        out["kv_blocks"] = getattr(kv, "num_blocks", None)
        data = getattr(kv, "data", None)
        if data is not None:
            out["kv_cache_bytes"] = data.numel() * data.element_size()
            out["kv_dtype"] = str(data.dtype).removeprefix("torch.")
            out["kv_tokens"] = out["kv_blocks"] * data.shape[3]  # [layers, 2, blocks, block_size, ...]
    if torch.cuda.is_available():
        out["cuda_allocated_bytes"] = torch.cuda.memory_allocated()
        out["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated()
        out["cuda_total_bytes"] = torch.cuda.get_device_properties(0).total_memory
    return out


def parse_kwargs(text):
    kw = json.loads(text or "{}")
    if not isinstance(kw, dict):
        raise ValueError(f"--engine-kwargs must be a JSON object, got {text!r}")
    return kw
