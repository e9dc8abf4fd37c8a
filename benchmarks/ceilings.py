"""What the device allows, measured in the run: copy and read bandwidth, the matmul rate, and the achievable
decode step (the model's own projections chained, captured in one CUDA graph and replayed).

On a GPU, medians of CUDA-event timings after warm-up; on a CPU (the --tiny smoke run) the same code at toy
sizes with wall-clock timings, so that every path runs, though the figures mean nothing there.
"""

import json
import os
import statistics
import time

import torch
import torch.nn.functional as F


def median_ms(fn, warmup=3, reps=10):
    """Median milliseconds of fn(); CUDA events on a GPU, perf_counter on a CPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if torch.cuda.is_available():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def copy_bandwidth(nbytes, dtype=torch.bfloat16):
    """Device-to-device copy; bytes read + written."""
    src = torch.randn(nbytes // 2, device=_device(), dtype=dtype)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src))
    moved = 2 * src.numel() * src.element_size()
    return {"copy_bytes_moved": moved, "copy_ms": ms, "copy_Bps": moved / (ms / 1e3)}


def read_bandwidth(nbytes, dtype=torch.bfloat16):
    """A sum over `nbytes`: decode streams weights, it reads them once and writes almost nothing."""
    x = torch.randn(nbytes // 2, device=_device(), dtype=dtype)
    ms = median_ms(lambda: x.sum())
    read = x.numel() * x.element_size()
    return {"read_bytes": read, "read_ms": ms, "read_Bps": read / (ms / 1e3)}


def matmul_rate(n, dtype=torch.bfloat16):
    a = torch.randn(n, n, device=_device(), dtype=dtype)
    b = torch.randn(n, n, device=_device(), dtype=dtype)
    ms = median_ms(lambda: torch.mm(a, b), warmup=5, reps=20)
    return {"matmul_shape": [n, n, n], "matmul_dtype": str(dtype), "matmul_ms": ms,
            "matmul_flops": 2 * n**3 / (ms / 1e3)}


def measure_basic(tiny=False):
    """Copy, read and matmul ceilings (H100: 4 GB buffers and 8192^3 in bf16; tiny: 64 MB and 512^3 fp32)."""
    nbytes, n, dtype = (64 * 2**20, 512, torch.float32) if tiny else (4_000_000_000, 8192, torch.bfloat16)
    out = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
           "timer": "cuda events" if torch.cuda.is_available() else "perf_counter (CPU: figures mean nothing)"}
    for part in (lambda: copy_bandwidth(nbytes), lambda: read_bandwidth(nbytes), lambda: matmul_rate(n, dtype)):
        out.update(part())
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    out["bandwidth_Bps"] = out["copy_Bps"]  # the name bench runs before issue 8 used
    return out


def _safetensors_files(path):
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            return sorted({os.path.join(path, v) for v in json.load(f)["weight_map"].values()})
    return [os.path.join(path, "model.safetensors")]


def load_projections(path, dtype, device):
    """The chain's weights in decode order: per layer fused qkv, o, fused gate_up, down; then the LM head."""
    from safetensors import safe_open
    with open(os.path.join(path, "config.json")) as f:
        n_layers = json.load(f)["num_hidden_layers"]
    raw = {}
    for file in _safetensors_files(path):
        with safe_open(file, "pt", device=device) as f:
            for name in f.keys():
                if name.endswith("proj.weight") or name == "lm_head.weight":
                    raw[name] = f.get_tensor(name).to(dtype)
    chain = []
    for i in range(n_layers):
        p = f"model.layers.{i}."
        chain.append(torch.cat([raw.pop(p + f"self_attn.{k}_proj.weight") for k in "qkv"]))
        chain.append(raw.pop(p + "self_attn.o_proj.weight"))
        chain.append(torch.cat([raw.pop(p + f"mlp.{k}_proj.weight") for k in ("gate", "up")]))
        chain.append(raw.pop(p + "mlp.down_proj.weight"))
    chain.append(raw.pop("lm_head.weight"))
    return chain


def _chain_fn(chain, batch, device, dtype):
    """Every projection in order, each on a contiguous input of its width (the model's projections take
    contiguous activations; which values flow does not change the time, and one stream keeps the order)."""
    inputs = {w.shape[1]: torch.randn(batch, w.shape[1], device=device, dtype=dtype) * 0.02 for w in chain}

    def run():
        for w in chain:
            F.linear(inputs[w.shape[1]], w)
    return run


def decode_chain(path, batches=(1, 64, 128, 256), tiny=False):
    """The model's projections alone (attention and norms left out), per batch size: one CUDA graph replayed
    on a GPU, eager on a CPU. Also eager at batch 1, to show what launching them one by one costs."""
    device, dtype = _device(), torch.float32 if tiny else torch.bfloat16
    chain = load_projections(path, dtype, device)
    weight_bytes = sum(w.numel() * w.element_size() for w in chain)
    out = {"weight_bytes": weight_bytes, "matrices": len(chain), "dtype": str(dtype), "batches": {}}
    for b in batches:
        run = _chain_fn(chain, b, device, dtype)
        if device == "cuda":
            run = _graphed(run)
        ms = median_ms(run, warmup=2, reps=10)
        out["batches"][str(b)] = {"ms": ms, "read_Bps": weight_bytes / (ms / 1e3), "tokens_per_s": b / (ms / 1e3),
                                  "mode": "cuda graph" if device == "cuda" else "eager"}
    if device == "cuda":
        out["eager_batch1_ms"] = median_ms(_chain_fn(chain, 1, device, dtype))
    del chain
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def _graphed(run):
    """Captures run() in one CUDA graph (after a warm-up on a side stream, as torch asks) and returns replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    return graph.replay
