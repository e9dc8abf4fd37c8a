"""CUDA correctness check beside the benchmark: our engine against HF transformers on the GPU, for every
architecture plugin (and the third-party kit's GPT-2 when it is installed).

Each check builds the tiny random checkpoint the test suite builds (the builders are imported from
tests/support), then in float32 compares:
  - last-token logits of the mixed prompt batch in one engine step with HF's, within 1e-3;
  - greedy tokens of the mixed batch with HF ``generate``, scheduled whole, in small prompt chunks and in a KV
    cache too small for the batch (preemption asserted), token for token;
  - family extras: Mistral and the windowed variants generate well past their window; Mixtral's router
    really spreads tokens over its experts.
In bf16 it runs a short greedy comparison for every case (NAME-bf16; float32 is the exact check: bf16
rounds differently in HF and here, so a step whose HF margin is within bf16 noise may flip; such a step
ends the comparison, and where the two part after it the step and HF's margin are reported, not counted
as a mismatch).

One line per check, a summary at the end, exit 1 on any mismatch. A check that kills the process's CUDA
context (a device-side assert) fails alone: the checks after it run in a fresh process. Without CUDA it runs on the CPU as a
dry run of itself (a few minutes). On the lent GPU: `. benchmarks/gpu_setup.sh && python3 benchmarks/gpu_parity.py`
(`--only llama-gqa,mixtral-bf16` runs some checks; `--list` names them; `--shard 1/3` a third of them).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

import torch

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))  # `support.*` and the test modules holding the builders
import support.arch_checkpoints as checkpoints  # noqa: E402
from support.family_parity import NEW_TOKENS, SCHEDULES, schedule_options  # noqa: E402
from support.moe_routing import expert_spread, recording_routing  # noqa: E402
from support.prompts import MIXED_PROMPTS  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

import mii_core  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a dry run of this script
# float32 last-token logits: ours within this of HF's float64 logits, or within LOGITS_NOISE_FACTOR times HF's
# own float32 error there if that is larger (loud tiny fixtures amplify summation-order noise: seen on Gemma
# MQA on the H200, 6.7e-3 on logits of ~40 with every greedy token equal)
LOGITS_TOLERANCE = 1e-3
LOGITS_NOISE_FACTOR = 4
WINDOW_NEW_TOKENS = 48  # a window of 16: every sequence runs well past it (as tests/test_arch_mistral.py)
BF16_NEW_TOKENS = 12
BF16_SUFFIX = "-bf16"  # every case also runs as NAME-bf16: a short greedy comparison in bf16


@dataclass
class Case:
    name: str
    build: Callable  # build(mktemp) -> (checkpoint for us, checkpoint for HF)
    new_tokens: int = NEW_TOKENS
    cache_blocks: int | None = None  # preempted: where a window frees blocks, the batch fits the usual tight cache
    extra: Callable | None = None  # extra(pipe, token_lists) -> (ok, detail)
    needs: str | None = None  # an optional plugin's entry-point name
    bf16: bool = True  # also run NAME-bf16


@dataclass
class Tally:
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def record(self, label: str, ok: bool, detail: str) -> None:
        (self.passed if ok else self.failed).append(label)
        print(f"[parity] {'ok  ' if ok else 'FAIL'} {label:34s} {detail}", flush=True)


def cases() -> list[Case]:
    window = dict(new_tokens=WINDOW_NEW_TOKENS, cache_blocks=10)  # 10 blocks of 4 hold two windows
    return [
        *(Case(f"llama-{v}", checkpoints.llama(v)) for v in checkpoints.LLAMA_VARIANTS),
        Case("mistral-window", checkpoints.family("test_arch_mistral", "window"), **window),
        Case("mistral-full", checkpoints.family("test_arch_mistral", "full")),
        Case("mixtral", checkpoints.family("test_arch_mixtral", "full"), extra=experts_really_used),
        Case("mixtral-window", checkpoints.family("test_arch_mixtral", "window"), **window),
        Case("qwen2-tied", checkpoints.family("test_arch_qwen2", "tied")),
        Case("qwen2-window", checkpoints.family("test_arch_qwen2", "window"), new_tokens=WINDOW_NEW_TOKENS),
        Case("qwen-v1", checkpoints.qwen_v1),  # HF Qwen2 on the original folder is the reference
        Case("falcon-7b", checkpoints.family("test_arch_falcon", "7b")),
        Case("falcon-40b", checkpoints.family("test_arch_falcon", "40b")),
        Case("falcon2", checkpoints.family("test_arch_falcon", "falcon2")),
        Case("falcon-rw", checkpoints.family("test_arch_falcon", "rw")),
        Case("phi-2", checkpoints.family("test_arch_phi", "phi2")),
        Case("phi-gqa", checkpoints.family("test_arch_phi", "gqa")),
        Case("opt-125m", checkpoints.family("test_arch_opt", "125m")),
        Case("opt-350m", checkpoints.family("test_arch_opt", "350m")),
        Case("qwen3-gqa", checkpoints.family("test_arch_qwen3", "gqa")),
        Case("qwen3-tied-window", checkpoints.family("test_arch_qwen3", "tied-window"), new_tokens=WINDOW_NEW_TOKENS),
        Case("gemma-mqa", checkpoints.family("test_arch_gemma", "mqa")),
        Case("gemma-mha", checkpoints.family("test_arch_gemma", "mha")),
        Case("gemma2-window", checkpoints.family("test_arch_gemma2", "window"), new_tokens=WINDOW_NEW_TOKENS),
        # its caps saturate tanh: in bf16 every step is a tie (margin 0), nothing to compare; gemma2-window
        # runs Gemma-2 in bf16
        Case("gemma2-tight-caps", checkpoints.family("test_arch_gemma2", "tight-caps"), bf16=False),
        Case("gpt-neox-parallel", checkpoints.family("test_arch_gpt_neox", "parallel")),
        Case("gpt-neox-sequential", checkpoints.family("test_arch_gpt_neox", "sequential")),
        Case("bloom-8-heads", checkpoints.family("test_arch_bloom", "8-heads")),
        Case("bloom-6-heads", checkpoints.family("test_arch_bloom", "6-heads")),
        Case("mpt-7b", checkpoints.family("test_arch_mpt", "7b")),
        Case("mpt-clip", checkpoints.family("test_arch_mpt", "clip")),
        Case("starcoder2-window", checkpoints.family("test_arch_starcoder2", "window"), **window),
        Case("starcoder2-no-bias", checkpoints.family("test_arch_starcoder2", "no-bias")),
        Case("phi3-4k-window", checkpoints.family("test_arch_phi3", "4k-window"), **window),
        Case("phi3-longrope", checkpoints.family("test_arch_phi3", "longrope")),
        Case("phi3-longrope-partial", checkpoints.family("test_arch_phi3", "longrope-partial")),
        Case("qwen2-moe-mixed", checkpoints.family("test_arch_qwen2_moe", "mixed"), extra=experts_really_used),
        Case("qwen2-moe-sparse-step", checkpoints.family("test_arch_qwen2_moe", "sparse-step")),
        Case("qwen2-moe-window", checkpoints.family("test_arch_qwen2_moe", "window"), new_tokens=WINDOW_NEW_TOKENS),
        Case("qwen3-moe-mixed", checkpoints.family("test_arch_qwen3_moe", "mixed"), extra=experts_really_used),
        Case("qwen3-moe-window-bias", checkpoints.family("test_arch_qwen3_moe", "window-bias"), **window),
        Case("gemma3-pattern", checkpoints.family("test_arch_gemma3_text", "pattern"), new_tokens=WINDOW_NEW_TOKENS),
        # its final softcap (15) saturates: in bf16 the top logits sit on the cap's grid (14.9375, 14.875,
        # 14.875, ...), every step a tie, nothing to compare; gemma3-pattern runs Gemma 3 in bf16
        Case("gemma3-scaled", checkpoints.family("test_arch_gemma3_text", "scaled"), bf16=False),
        *(Case(f"deepseek-v2-{v}", checkpoints.family("test_arch_deepseek_v2", v))
          for v in ("q-lora", "q-proj-grouped", "yarn-bias")),
        Case("gpt2-kit", checkpoints.gpt2_kit, needs="gpt2"),
        *(Case(f"gpt2-{v}", checkpoints.family("test_arch_gpt2", v), needs="gpt2")
          for v in ("gpt2", "untied-unscaled", "upcast")),
        Case("gptj-partial", checkpoints.family("test_arch_gptj", "partial")),
        Case("gptj-full-tied", checkpoints.family("test_arch_gptj", "full-tied")),
        Case("gpt-neo-alternating", checkpoints.family("test_arch_gpt_neo", "alternating"),
             new_tokens=WINDOW_NEW_TOKENS),
        Case("gpt-neo-all-local", checkpoints.family("test_arch_gpt_neo", "all-local"), **window),
    ]


def hf_model(path: Path, dtype: torch.dtype):
    # GPT-2's reorder_and_upcast_attn upcasts to float32 and refuses a float64 model; in exact arithmetic it is
    # the same function, so the float64 reference (the exact answer) runs without it
    exact_only = {"reorder_and_upcast_attn": False} if dtype == torch.float64 and getattr(
        transformers.AutoConfig.from_pretrained(path), "reorder_and_upcast_attn", False) else {}
    # HF's eager attention is its reference math. On the GPU transformers may pick SDPA, which drops
    # Gemma-2's attention-logit softcap (seen with transformers 5.17 on the H200: the tight-caps variant
    # parted at step 0) and runs float32 through a fused kernel of its own rounding.
    # Likewise its eager experts: on the GPU transformers 5.17 runs MoE experts through torch._grouped_mm,
    # which refuses float64 (the exact reference) and rounds float32 its own way.
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager",
                                                experts_implementation="eager", **exact_only).to(DEVICE).eval()


@torch.no_grad()
def hf_greedy(model, token_lists: list[list[int]], new_tokens: int) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Each prompt alone and unpadded, EOS ignored: the new ids and each step's top-1 minus top-2 logit.
    Each step is HF's whole forward over the sequence so far (no KV cache): the model's own definition.
    transformers 5.17's cached decode disagrees with its own forward for Phi-3 with a sliding window (from
    step 27 of a 47-token prompt; checked on the CPU, fixed by 5.24), and the H200's image has 5.17."""
    ids, margins = [], []
    for prompt in token_lists:
        out = model.generate(torch.tensor([prompt], device=DEVICE), do_sample=False, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, eos_token_id=None, output_logits=True,
                             return_dict_in_generate=True, use_cache=False)
        ids.append(out.sequences[0, len(prompt):].tolist())
        top2 = torch.stack(out.logits)[:, 0].float().topk(2, dim=-1).values
        margins.append((top2[:, 0] - top2[:, 1]).cpu())
    return ids, margins


def first_difference(got: list[int], expected: list[int]) -> int | None:
    return next((i for i, (g, e) in enumerate(zip(got, expected)) if g != e),
                None if len(got) == len(expected) else min(len(got), len(expected)))


def compare_tokens(got: list[list[int]], expected: list[list[int]], margins) -> tuple[bool, str]:
    """Equal token for token; on a difference, where, and how close HF's choice was there."""
    where = [first_difference(g, e) for g, e in zip(got, expected)]
    if all(w is None for w in where):
        return True, f"{len(got)} prompts x {len(expected[0])} tokens equal"
    notes = [f"prompt {i} differs at step {w} (HF margin {margins[i][w]:.1e})"
             for i, w in enumerate(where) if w is not None and w < len(margins[i])]
    return False, "; ".join(notes) or "lengths differ"


@torch.no_grad()
def our_last_logits(pipe, token_lists: list[list[int]]) -> torch.Tensor:
    """The last-token logits of each prompt, all in one engine step, as float64 on DEVICE."""
    uids = list(range(10_000, 10_000 + len(token_lists)))
    try:
        return pipe.engine.put(uids, token_lists).to(DEVICE, torch.float64)
    finally:
        for uid in uids:
            pipe.engine.flush(uid)


@torch.no_grad()
def hf_last_logits(model, token_lists: list[list[int]]) -> torch.Tensor:
    return torch.stack([model(torch.tensor([ids], device=DEVICE)).logits[0, -1] for ids in token_lists]).double()


def last_logits_diff(pipe, model, token_lists: list[list[int]]) -> float:
    return (our_last_logits(pipe, token_lists) - hf_last_logits(model, token_lists)).abs().max().item()


def check_last_logits(case: Case, pipe, model, reference: Path, token_lists, tally: Tally) -> None:
    """Ours and HF's float32 logits, each against HF in float64 (the exact answer, near enough): ours must be
    within LOGITS_TOLERANCE of it, or no further than LOGITS_NOISE_FACTOR times HF's own float32 error."""
    exact = hf_last_logits(hf_model(reference, torch.float64), token_lists)
    ours_error = (our_last_logits(pipe, token_lists) - exact).abs().max().item()
    hf_error = (hf_last_logits(model, token_lists) - exact).abs().max().item()
    bound = max(LOGITS_TOLERANCE, LOGITS_NOISE_FACTOR * hf_error)
    tally.record(f"{case.name} last-token logits", ours_error <= bound,
                 f"max |ours - HF float64| {ours_error:.2e} <= {bound:.1e} (HF float32's own {hf_error:.2e}) "
                 f"device={pipe.engine.device}")


def generate(pipe, token_lists: list[list[int]], new_tokens: int) -> list[list[int]]:
    outputs = pipe.generate_tokens(token_lists, max_new_tokens=new_tokens, do_sample=False, ignore_eos=True)
    return [list(o.token_ids) for o in outputs]


@dataclass
class _Length:  # what schedule_options reads from a reference
    prompt_length: int


KV_FRACTION = {"value": None}  # --kv-fraction: None keeps the engine's default share of free GPU memory
# The parity runs batch at most 6 prompts: graphs for decode batches up to 8 (1, 2, 4, 8) replay every
# decode step, and the engine skips capturing its default ladder up to 256 (14 sizes, in each of the four
# engines a case builds: most of a case's time on the H200).
GRAPH_MAX_BATCH = 8


def engine_options(case: Case | None = None, schedule: str = "whole", token_lists=()) -> dict:
    """The schedule's options; where they leave the KV cache's size alone, --kv-fraction's share if given."""
    options = schedule_options(schedule, [_Length(len(t)) for t in token_lists], case.new_tokens,
                               case.cache_blocks) if case else {}
    engine = options.setdefault("inference_engine_config", {})
    engine.setdefault("cuda_graph_max_batch_size", GRAPH_MAX_BATCH)
    state = engine.setdefault("state_manager", {})
    if KV_FRACTION["value"] is not None and "memory_config" not in state:
        state["memory_config"] = {"mode": "fraction", "size": KV_FRACTION["value"]}
    return options


def check_float32(case: Case, ours: Path, reference: Path, tally: Tally) -> None:
    model = hf_model(reference, torch.float32)
    expected = margins = token_lists = None
    for schedule in SCHEDULES:
        label = f"{case.name} {schedule}"
        if token_lists is None:  # the engine's tokenizer; HF then reads the very same ids
            pipe = mii_core.pipeline(str(ours), dtype="float32", **engine_options())
            token_lists = [pipe.tokenizer(p)["input_ids"] for p in MIXED_PROMPTS]
            expected, margins = hf_greedy(model, token_lists, case.new_tokens)
            check_last_logits(case, pipe, model, reference, token_lists, tally)
        else:
            pipe = mii_core.pipeline(str(ours), dtype="float32", **engine_options(case, schedule, token_lists))
        try:
            before = pipe.loop.scheduler.num_preemptions
            ok, detail = compare_tokens(generate(pipe, token_lists, case.new_tokens), expected, margins)
            preempted = pipe.loop.scheduler.num_preemptions - before
            if schedule == "preempted" and preempted == 0:
                ok, detail = False, f"no sequence was preempted; {detail}"
            tally.record(label, ok, f"{detail}; preemptions {preempted}")
            if case.extra is not None and schedule == "whole":
                tally.record(f"{case.name} {case.extra.__name__}", *case.extra(pipe, token_lists))
        finally:
            pipe.destroy()
    del model


def experts_really_used(pipe, token_lists) -> tuple[bool, str]:
    """The engine's router picks among its experts: in each sparse layer at least half of them get tokens
    and none takes half the picks (eager steps are recorded; replayed CUDA graphs call no Python)."""
    with recording_routing() as calls:
        generate(pipe, token_lists, 4)
    moe = pipe.spec.moe
    layers, experts = sum(moe.is_sparse(i) for i in range(pipe.spec.num_layers)), moe.num_experts
    if not calls or len(calls) % layers:
        return False, f"{len(calls)} routing calls for {layers} layers"
    used, top_share = expert_spread(calls, layers, experts)
    ok = min(used) >= experts // 2 and top_share < 0.5
    return ok, f"experts used per layer {used} of {experts}; busiest expert's share {top_share:.2f}"


@torch.no_grad()
def hf_bf16_noise(model32, model16, prompt: list[int], new_ids: list[int]) -> torch.Tensor:
    """At each greedy step of ``new_ids``, how far HF's own bf16 logits lie from its float32 logits (max over
    the vocabulary, the same tokens fed to both): the size of bf16's rounding for this model there."""
    ids = torch.tensor([prompt + new_ids[:-1]], device=DEVICE)
    steps = slice(len(prompt) - 1, len(prompt) - 1 + len(new_ids))
    exact = model32(ids).logits[0, steps].float()
    rounded = model16(ids).logits[0, steps].float()
    return (exact - rounded).abs().max(dim=-1).values.cpu()


@torch.no_grad()
def router_logits(model, ids: torch.Tensor) -> list[torch.Tensor]:
    """Each MoE layer's router logits [positions, experts] (float32) over ``ids``: HF's ``*TopKRouter``
    modules return them first; none for a dense model."""
    routers = [m for m in model.modules() if type(m).__name__.endswith("TopKRouter")]
    seen: list[torch.Tensor] = []
    hooks = [r.register_forward_hook(lambda mod, args, out: seen.append(out[0].float())) for r in routers]
    try:
        model(ids)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def first_routing_tie(model32, model16, prompt: list[int], new_ids: list[int]) -> int:
    """The first greedy step whose forward holds a routing tie under bf16: at some position and MoE layer, the
    gap between the k-th and (k+1)-th of HF's float32 router logits is within twice HF's own bf16 error on
    that layer's logits there. A router picking the other expert there is bf16's rounding, not a bug (seen on
    the tiny Mixtral: experts 0.084 apart in float32, bf16 moving each by ~0.1); len(new_ids) if none."""
    ids = torch.tensor([prompt + new_ids[:-1]], device=DEVICE)
    exact, rounded = router_logits(model32, ids), router_logits(model16, ids)
    k = getattr(model32.config, "num_experts_per_tok", None)
    if not exact or k is None:
        return len(new_ids)
    tied = torch.zeros(ids.shape[1], dtype=torch.bool, device=DEVICE)
    for r32, r16 in zip(exact, rounded):
        top = r32.topk(k + 1, dim=-1).values
        tied |= (top[:, k - 1] - top[:, k]) <= 2 * (r32 - r16).abs().max(dim=-1).values
    positions = tied.nonzero().flatten().tolist()
    return min(len(new_ids), max(0, positions[0] - (len(prompt) - 1))) if positions else len(new_ids)


def check_bf16(case: Case, mktemp, tally: Tally) -> None:
    """A short greedy run in bf16 on both sides, the batch whole. A prompt is compared up to the first step
    whose HF margin is within twice HF's own bf16 error there (hf_bf16_noise: our error may lie the other
    way), or whose forward holds a routing tie (first_routing_tie), a tie under bf16 rounding; a difference
    before that is a mismatch. Where the two part after it,
    the step and HF's margin there are reported (issue 17's rule)."""
    ours, reference = case.build(mktemp)
    model, model32 = hf_model(reference, torch.bfloat16), hf_model(reference, torch.float32)
    pipe = mii_core.pipeline(str(ours), dtype="bfloat16", **engine_options())
    try:
        token_lists = [pipe.tokenizer(p)["input_ids"] for p in MIXED_PROMPTS]
        expected, margins = hf_greedy(model, token_lists, BF16_NEW_TOKENS)
        got = generate(pipe, token_lists, BF16_NEW_TOKENS)
        diff = last_logits_diff(pipe, model, token_lists)
    finally:
        pipe.destroy()
    noise = [hf_bf16_noise(model32, model, p, e) for p, e in zip(token_lists, expected)]
    routing = [first_routing_tie(model32, model, p, e) for p, e in zip(token_lists, expected)]
    compared, bad, parted = 0, [], []
    for i, (g, e, m) in enumerate(zip(got, expected, margins)):
        steps = next((s for s in range(len(e)) if m[s] <= 2 * noise[i][s]), len(e))  # comparable up to a tie
        steps = min(steps, routing[i])
        compared += steps
        where = first_difference(g, e)
        if where is not None and where < steps:
            bad.append(f"prompt {i} differs at step {where} (HF margin {m[where]:.2f})")
        elif where is not None:
            parted.append(f"prompt {i} parts at step {where} (HF margin {m[where]:.3f}, HF's bf16 error "
                          f"{noise[i][where]:.3f}{', a routing tie from step %d' % routing[i] if routing[i] < len(e) else ''}"
                          f": a tie)" if where < len(m) else f"prompt {i}: lengths differ")
    equal = sum(g == e for g, e in zip(got, expected))
    detail = (f"{compared} of {len(expected) * BF16_NEW_TOKENS} tokens clear of bf16 ties compared, "
              f"{equal}/{len(expected)} prompts equal throughout{'; ' if bad or parted else ''}"
              f"{'; '.join(bad + parted)}; last-token logits max |diff| {diff:.2e} (reported)")
    del model, model32
    if compared == 0 and not bad:  # every prompt a tie from its first step: reported, neither passed nor failed
        tally.skipped.append(f"{case.name}{BF16_SUFFIX}")
        print(f"[parity] skip {case.name + ' bf16 greedy':34s} nothing clear of bf16 ties: {detail}", flush=True)
        return
    tally.record(f"{case.name} bf16 greedy", not bad, detail)


def run_check(name: str, mktemp, tally: Tally) -> None:
    """``name``: a case's name (its float32 checks) or that name + BF16_SUFFIX (its bf16 greedy check)."""
    by_name = {case.name: case for case in cases()}
    case = by_name[name.removesuffix(BF16_SUFFIX)]
    if case.needs and case.needs not in {ep.name for ep in entry_points(group="mii_core.plugins")}:
        tally.skipped.append(name)
        print(f"[parity] skip {name:34s} no '{case.needs}' plugin is installed", flush=True)
        return
    if name.endswith(BF16_SUFFIX):
        guarded(name, tally, lambda: check_bf16(case, mktemp, tally))
    else:
        guarded(name, tally, lambda: check_float32(case, *case.build(mktemp), tally))


def guarded(name: str, tally: Tally, check: Callable[[], None]) -> None:
    start = time.perf_counter()
    try:
        check()
    except Exception:  # one broken family must not hide the others' results
        tally.record(f"{name} (error)", False, traceback.format_exc().strip().splitlines()[-1])
        traceback.print_exc()
    print(f"[parity]      {name} took {time.perf_counter() - start:.1f}s", flush=True)


def cuda_usable() -> bool:
    """False once a device-side error (an assert in a kernel) has poisoned this process's CUDA context:
    every later CUDA call fails, whatever it is."""
    if DEVICE != "cuda":
        return True
    try:
        torch.cuda.synchronize()
        return True
    except Exception:
        return False


def run_rest_in_fresh_process(names: list[str], tally: Tally) -> None:
    """The remaining checks in a new process, so that one family's device-side error does not fail them."""
    print(f"[parity] this process's CUDA context is lost; {', '.join(names)} run in a fresh process", flush=True)
    fraction = [] if KV_FRACTION["value"] is None else ["--kv-fraction", str(KV_FRACTION["value"])]
    code = subprocess.call([sys.executable, __file__, "--only", ",".join(names), *fraction])
    tally.record("checks run in a fresh process", code == 0, f"exit {code} ({len(names)} checks, lines above)")


def shard_of(text: str, parser: argparse.ArgumentParser) -> tuple[int, int]:
    try:
        shard, shards = (int(part) for part in text.split("/"))
    except ValueError:
        shards = shard = -1
    if not 0 <= shard < shards:
        parser.error(f"--shard takes I/N with 0 <= I < N, got {text!r}")
    return shard, shards


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated check names (see --list); NAME-bf16 is NAME in bf16")
    parser.add_argument("--shard", default="0/1", help="I/N: run every N-th check from the I-th (0-based), so that "
                                                      "N processes share the list")
    parser.add_argument("--list", action="store_true", help="print the check names and exit")
    parser.add_argument("--kv-fraction", type=float, default=None,
                        help="share of free GPU memory for each engine's KV cache (default: the engine's 0.9); "
                             "lower leaves room for another GPU process beside this one")
    parser.add_argument("--no-bf16", action="store_true", help="only the float32 checks (no NAME-bf16 ones)")
    args = parser.parse_args(argv)
    KV_FRACTION["value"] = args.kv_fraction
    names = [c.name for c in cases()] + [c.name + BF16_SUFFIX for c in cases() if c.bf16 and not args.no_bf16]
    if args.list:
        print("\n".join(names))
        return 0
    only = set(filter(None, args.only.split(",")))
    if only - set(names):
        parser.error(f"unknown check(s) {sorted(only - set(names))}; choose from {names}")
    transformers.logging.set_verbosity_error()  # load reports and progress bars would bury the check lines
    transformers.utils.logging.disable_progress_bar()
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 parity: no TF32 in either side's matmuls
    torch.backends.cudnn.allow_tf32 = False
    print(f"[parity] device {DEVICE}"
          f"{' (' + torch.cuda.get_device_name() + ')' if DEVICE == 'cuda' else ' (dry run: no CUDA)'}", flush=True)
    tally, start = Tally(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        mktemp = checkpoints.folder_maker(Path(tmp))
        shard, shards = shard_of(args.shard, parser)
        selected = [name for name in names if not only or name in only][shard::shards]
        for index, name in enumerate(selected):
            run_check(name, mktemp, tally)
            if not cuda_usable() and selected[index + 1:]:
                run_rest_in_fresh_process(selected[index + 1:], tally)
                break
    print(f"[parity] summary: {len(tally.passed)} passed, {len(tally.failed)} failed, "
          f"{len(tally.skipped)} skipped {tally.skipped} in {time.perf_counter() - start:.0f}s on {DEVICE}", flush=True)
    for label in tally.failed:
        print(f"[parity] FAILED {label}", flush=True)
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
