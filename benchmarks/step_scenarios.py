"""One profile_steps.py run (a family in one weight / KV-cache mode) in its own process: the checkpoint, the
engine as the benchmark starts it, and the three steps the benchmark's rows are made of, each timed and
profiled (torch.profiler) and broken down by kernel category (kernel_categories.py).

- decode_b1: W2's step, one sequence; decode_b256: W1's step, its 256 sequences at once. A decode step's
  context is its sequence's prompt plus half its output (workloads.py's lengths): the context its average
  decode step sees (W1: prompts and outputs uniform in [100, 1024], a mean near 900 tokens).
- prefill: W3's step, as many of its 1,024-token prompts as one step takes (max_ragged_batch_size).
A step is ``engine.put`` plus the argmax the generation loop samples greedy rows with, timed between
synchronisations; so the host's work, which the benchmark's loop overlaps with the device (async
scheduling), shows here as idle GPU time. A decode-only step replays the engine's CUDA graph of its batch
size, as in the benchmark; where the profiler sees no graph's kernels, the breakdown is taken from the
same step run eagerly (graphs off for it) and the wall time stays the graph's (``breakdown_from`` says).
"""
from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import sys
import time
import traceback

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checkpoint  # noqa: E402
import families  # noqa: E402
import ours  # noqa: E402
import workloads  # noqa: E402
from kernel_categories import breakdown, categorize  # noqa: E402
from phases import sync, write_json  # noqa: E402

DEFAULT_CKPT = {"llama": {False: "/tmp/llama3-8b-random", True: "/tmp/llama-tiny-random"},  # bench_llama's
                "mixtral": {False: "/tmp/mixtral-4l-random", True: "/tmp/mixtral-tiny-random"},  # its moe row's
                **{name: {tiny: f.path(tiny) for tiny in (False, True)} for name, f in families.FAMILIES.items()}}
TIMED_REPEATS = {False: 5, True: 2}  # timed steps per scenario (the median counts); tiny: the CPU is slow
TOP_KERNELS = 14


def checkpoint_path(family: str, tiny: bool, ckpt_dir: str | None) -> str:
    default = DEFAULT_CKPT[family][tiny]
    return os.path.join(ckpt_dir, os.path.basename(default)) if ckpt_dir else default


def build(family: str, tiny: bool, ckpt_dir: str | None) -> dict:
    """The family's random checkpoint (built, or reused while its marker matches); its summary."""
    path = checkpoint_path(family, tiny, ckpt_dir)
    if family == "llama":
        return checkpoint.build_checkpoint(path, tiny)
    if family == "mixtral":
        return checkpoint.build_mixtral(path, tiny)
    # the disk of the GPU machine holds all three, but free room the way bench_llama's sections do if it must
    removable = [checkpoint_path(f, tiny, ckpt_dir) for f in DEFAULT_CKPT if f != family]
    return checkpoint.build_family(families.FAMILIES[family], path, tiny, removable=removable)


def engine_kwargs(quantization_mode: str | None, kv_cache_dtype: str) -> dict:
    """mii_core.pipeline's options as bench_llama.py's sections pass them."""
    kw = ours.with_kv_cache_dtype({}, kv_cache_dtype) if kv_cache_dtype != "auto" else {}
    if quantization_mode:
        kw["quantization_mode"] = quantization_mode
    return kw


def decode_contexts(workload) -> list[list[int]]:
    """Each prompt extended by half its output (its own ids again): the context of its mean decode step."""
    return [list(itertools.islice(itertools.cycle(p), len(p) + n // 2))
            for p, n in zip(workload.prompts, workload.max_new_tokens)]


def scenarios(first_special: int, tiny: bool, max_step_tokens: int) -> list[dict]:
    w2 = workloads.make_w2(first_special, tiny)
    w1 = workloads.make_w1(8 if tiny else 256, first_special, tiny)  # bench_llama's W1 requests
    w3 = workloads.make_w3(first_special, tiny)
    per_step = max(1, min(len(w3.prompts), max_step_tokens // len(w3.prompts[0])))
    return [
        {"name": "decode_b1", "what": "W2's decode step", "contexts": decode_contexts(w2)},
        {"name": f"decode_b{len(w1.prompts)}", "what": "W1's decode step", "contexts": decode_contexts(w1)},
        {"name": "prefill", "what": f"W3's prefill step: {per_step} prompts of {len(w3.prompts[0])} tokens",
         "prompts": w3.prompts[:per_step], "fresh_prompts": lambda i: workloads.make_w3(
             first_special, tiny, seed=100 + i).prompts[:per_step]},  # a prefix-cache hit would shorten it
    ]


def fill(engine, uids: list[int], contexts: list[list[int]]) -> None:
    """Puts the contexts into the KV cache, whole prompts grouped into steps the engine accepts."""
    limits = engine.config
    group, tokens = [], 0
    for uid, ctx in zip(uids, contexts):
        full = tokens + len(ctx) > limits.max_ragged_batch_size or len(group) == limits.max_ragged_sequence_count
        if group and full:
            engine.put([u for u, _ in group], [c for _, c in group])
            group, tokens = [], 0
        group.append((uid, ctx))
        tokens += len(ctx)
    if group:
        engine.put([u for u, _ in group], [c for _, c in group])


def timed_step(engine, uids: list[int], token_lists: list[list[int]]) -> float:
    """One step as the generation loop runs it for greedy rows (forward, then argmax on the device); ms."""
    sync()
    start = time.perf_counter()
    engine.put(uids, token_lists).argmax(dim=-1)
    sync()
    return (time.perf_counter() - start) * 1e3


def profiled_step(engine, uids, token_lists) -> tuple[float, list[tuple[str, float]]]:
    """(wall ms under the profiler, [(kernel name, us)] one per launch). Without a GPU the "kernels" are the
    CPU operators with their self time (no operator counted twice), so the CPU run exercises the same path."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    on_gpu = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        wall_ms = timed_step(engine, uids, token_lists)
    if on_gpu:
        kernels = [(e.name, e.time_range.elapsed_us()) for e in prof.events()
                   if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
    else:
        kernels = [(e.name, e.self_cpu_time_total) for e in prof.events()
                   if e.device_type == DeviceType.CPU and not getattr(e, "is_user_annotation", False)]
    return wall_ms, kernels


def replays_graph(engine, contexts: list[list[int]]) -> bool:
    graphs = engine.graphs
    if graphs is None or not getattr(graphs, "graphs", None):  # none captured (the CPU, or capture failed)
        return False
    widest = -(-(max(map(len, contexts)) + 16) // engine.block_size)  # room for the steps the scenario adds
    return graphs.fits(len(contexts), widest)


def graph_kernels_seen(kernels, num_layers: int) -> bool:
    """Whether the profiler saw the graph's kernels: a step launches several a layer, copies aside."""
    return sum(categorize(name) != "elementwise/copy" for name, _ in kernels) >= num_layers


@contextlib.contextmanager
def graphs_off(engine):
    """The engine's decode steps run eagerly while this is open."""
    saved, engine.graphs = engine.graphs, None
    try:
        yield
    finally:
        engine.graphs = saved


def decode_scenario(engine, sc: dict, uid0: int, tiny: bool) -> dict:
    uids = list(range(uid0, uid0 + len(sc["contexts"])))
    fill(engine, uids, sc["contexts"])
    step = [[c[-1]] for c in sc["contexts"]]  # the token fed back (any id below the specials will do)
    graph = replays_graph(engine, sc["contexts"])
    try:
        timed_step(engine, uids, step)  # warm-up at this shape
        walls = [timed_step(engine, uids, step) for _ in range(TIMED_REPEATS[tiny])]
        profiled_ms, kernels = profiled_step(engine, uids, step)
        res = {"cuda_graph": graph, "breakdown_from": "cuda graph replay" if graph else "eager step"}
        if graph:
            with graphs_off(engine):
                timed_step(engine, uids, step)  # warm-up: the eager path's own shapes
                res["eager_wall_ms"] = timed_step(engine, uids, step)
                if not graph_kernels_seen(kernels, engine.model.spec.num_layers):
                    _, kernels = profiled_step(engine, uids, step)
                    res["breakdown_from"] = ("eager step: the profiler saw no kernels of the graph replay "
                                             "(percentages are of the graph's wall time)")
        return {**res, **summary(sc, walls, profiled_ms, kernels)}
    finally:
        for uid in uids:
            engine.flush(uid)


def prefill_scenario(engine, sc: dict, uid0: int, tiny: bool) -> dict:
    """Each timed step a new set of prompts on new uids, flushed after it."""
    def run(i, profiled=False):
        prompts = sc["fresh_prompts"](i)
        uids = list(range(uid0 + i * len(prompts), uid0 + (i + 1) * len(prompts)))
        try:
            return profiled_step(engine, uids, prompts) if profiled else timed_step(engine, uids, prompts)
        finally:
            for uid in uids:
                engine.flush(uid)
    run(0)  # warm-up
    walls = [run(1 + i) for i in range(TIMED_REPEATS[tiny])]
    profiled_ms, kernels = run(1 + TIMED_REPEATS[tiny], profiled=True)
    return {"cuda_graph": False, "breakdown_from": "eager step", **summary(sc, walls, profiled_ms, kernels)}


def summary(sc: dict, walls: list[float], profiled_ms: float, kernels) -> dict:
    """The step's shape, wall times and breakdown. On the GPU the shares are of the median unprofiled wall
    time (the profiler slows the host, not the kernels); on the CPU, where the profiler slows the very
    operators it times, of the profiled step's own wall time."""
    import torch
    lengths = [len(c) for c in sc.get("contexts", sc.get("prompts"))]
    wall_ms = statistics.median(walls)
    base_ms = wall_ms if torch.cuda.is_available() else profiled_ms
    shape = ({"sequences": len(lengths), "new_tokens": len(lengths), "mean_context": sum(lengths) / len(lengths),
              "max_context": max(lengths)} if "contexts" in sc else
             {"sequences": len(lengths), "new_tokens": sum(lengths), "mean_context": 0, "max_context": 0})
    return {"what": sc["what"], **shape, "wall_ms": wall_ms, "wall_ms_all": walls, "profiled_wall_ms": profiled_ms,
            "shares_of": "wall_ms" if base_ms == wall_ms else "profiled_wall_ms",
            **breakdown(kernels, base_ms, TOP_KERNELS)}


def run(label: str, family: str, quantization_mode: str | None, kv_cache_dtype: str, tiny: bool,
        ckpt_dir: str | None, part_path: str) -> dict:
    """Builds, starts, profiles every scenario; the part file is rewritten after each, so what a run
    stopped at its time limit measured is kept."""
    kw = engine_kwargs(quantization_mode, kv_cache_dtype)
    part = {"run": label, "family": family, "quantization_mode": quantization_mode, "kv_cache_dtype": kv_cache_dtype,
            "engine_kwargs": kw, "scenarios": {}, "errors": {}}
    write_json(part_path, part)
    t = time.perf_counter()
    ck = build(family, tiny, ckpt_dir)
    part.update(checkpoint=ck["path"], checkpoint_s=time.perf_counter() - t)
    pipe, part["startup_s"] = ours.start(ck["path"], kw)
    write_json(part_path, part)
    engine = pipe.engine
    try:
        for i, sc in enumerate(scenarios(ck["shape"]["bos_token_id"], tiny, engine.config.max_ragged_batch_size)):
            measure = prefill_scenario if "prompts" in sc else decode_scenario
            try:
                part["scenarios"][sc["name"]] = measure(engine, sc, 100_000 * (i + 1), tiny)
            except Exception as e:  # noqa: BLE001 - one scenario's failure must not cost the others
                part["errors"][sc["name"]] = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-2000:]}"
            write_json(part_path, part)
    finally:
        pipe.destroy()
    return part
