"""An independent PyTorch reference of each quantization mode: transformers' own model, loaded from a copy
of the checkpoint whose quantized tensors are replaced by their dequantized values, worked out here from the
format's definition (nearest e3m2 value by search over its 64 values; e4m3 by torch's cast), not by the
engine's quantizer. In mode "fp8" the inputs of the non-expert linears also go through a per-tensor e4m3
quantization in steps of more than 8 tokens, and so do the experts' inputs and their act(gate) · up (one scale
over the step's picks), as the engine's contract says.

Which checkpoint tensors are quantized comes from the engine model built from the folder (its quantized
parameters have no storage: device "meta") and the family's weight rules (name → parameter, and whether the
tensor is stored [in, out]); every quantized tensor is quantized along its output axis, one scale per row,
but for mode "fp8"'s linears: one scale per engine parameter (the absmax over every checkpoint tensor that
fills it, e.g. q, k and v of a fused qkv), as vLLM's dynamic FP8.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file

E4M3_MAX, E3M2_MAX = 448.0, 28.0
WEIGHT_ONLY_MAX_TOKENS = 8
# the engine's LM head scores only the rows whose logits are wanted (here one a sequence, each prompt alone):
# weight-only whatever the step's tokens, so its input is never quantized here
HEAD = "lm_head.weight"


def e3m2_table() -> torch.Tensor:
    """All 64 e3m2 values, from the definition: sign, 3 exponent bits (bias 3), 2 mantissa bits."""
    values = []
    for code in range(64):
        sign, exponent, mantissa = -1.0 if code & 32 else 1.0, (code >> 2) & 7, code & 3
        magnitude = 2.0 ** (exponent - 3) * (1 + mantissa / 4) if exponent else 2.0 ** -2 * (mantissa / 4)
        values.append(sign * magnitude)
    return torch.tensor(values, dtype=torch.float64)


def dequantized(tensor: torch.Tensor, mode: str, out_axis: int, k_groups: int = 1,
                tensor_amax: float | None = None) -> torch.Tensor:
    """``tensor`` through ``mode``'s weight quantization and back, one scale per slice along ``out_axis``
    (or, given ``tensor_amax``, one scale for all: that absmax over the largest code); ``k_groups`` > 1: per
    slice and each of that many equal parts of the input axis (a tensor-parallel rank's columns of a
    row-parallel weight)."""
    if k_groups > 1:
        parts = tensor.movedim(out_axis, -2).chunk(k_groups, dim=-1)
        whole = torch.cat([dequantized(part, mode, -2) for part in parts], dim=-1)
        return whole.movedim(-2, out_axis).contiguous()
    w = tensor.double().movedim(out_axis, -2)
    largest = E3M2_MAX if mode == "wf6af16" else E4M3_MAX
    amax = w.abs().amax(dim=-1, keepdim=True) if tensor_amax is None else torch.full_like(w[..., :1], tensor_amax)
    scale = torch.where(amax > 0, amax / largest, torch.ones_like(amax)).float().double()  # float32 scales
    scaled = (w / scale).float()
    if mode == "wf6af16":
        table = e3m2_table()
        codes = (scaled.double().unsqueeze(-1) - table).abs().argmin(dim=-1)
        values = table[codes]
    else:
        values = scaled.to(torch.float8_e4m3fn).double()
    return (values * scale).movedim(-2, out_axis).to(tensor.dtype).contiguous()


def quantized_targets(model: torch.nn.Module) -> set[str]:
    """The engine's quantized parameter names (no storage: the weights live in their quantized slots)."""
    return {name for name, param in model.named_parameters() if param.is_meta}


def row_parallel_targets(model: torch.nn.Module) -> set[str]:
    """The engine's parameters whose input axis tensor parallelism splits (row-parallel linears, experts'
    down stacks): each rank quantizes its own columns."""
    from mii_core.model.moe import Experts
    from mii_core.model.parallel import RowParallelLinear

    return {f"{name}.{'weight' if isinstance(module, RowParallelLinear) else 'down'}"
            for name, module in model.named_modules() if isinstance(module, (RowParallelLinear, Experts))}


def write_reference(source: Path, dest: Path, policy, quantized: set[str], mode: str,
                    split_columns: set[str] = frozenset(), ranks: int = 1) -> tuple[Path, set[str]]:
    """Copies ``source`` to ``dest`` with every quantized tensor dequantized (those of ``split_columns`` in
    ``ranks`` column groups); returns the folder and the names of the quantized tensors that are not
    experts (the ones whose inputs "fp8" quantizes)."""
    shutil.copytree(source, dest)
    linears: set[str] = set()
    files = sorted(dest.glob("*.safetensors"))
    assert files, f"{source} has no safetensors files"
    param_amax = _per_tensor_amax(files, policy, quantized) if mode == "fp8" and ranks == 1 else {}
    for file in files:
        tensors = load_file(str(file))
        for name, tensor in tensors.items():
            target = policy.map_weight(name)
            if target is None or target.param_name not in quantized:
                continue
            groups = ranks if target.param_name in split_columns else 1
            tensors[name] = dequantized(tensor, mode, -1 if target.rule.transpose else -2, groups,
                                        param_amax.get(target.param_name))
            if not _is_expert(target.param_name) and target.param_name != HEAD:
                linears.add(name)
        save_file(tensors, str(file), metadata={"format": "pt"})
    return dest, linears


def _is_expert(param_name: str) -> bool:
    return param_name.endswith(("experts.gate_up", "experts.down"))


def _per_tensor_amax(files: Sequence[Path], policy, quantized: set[str]) -> dict[str, float]:
    """Each quantized linear parameter's absmax over every checkpoint tensor that fills it."""
    amax: dict[str, float] = {}
    for file in files:
        for name, tensor in load_file(str(file)).items():
            target = policy.map_weight(name)
            if target is not None and target.param_name in quantized and not _is_expert(target.param_name):
                amax[target.param_name] = max(amax.get(target.param_name, 0.0), tensor.double().abs().max().item())
    return amax


def hook_fp8_inputs(model: torch.nn.Module, linear_tensors: set[str], jitter: float = 0.0) -> int:
    """Puts the input of each module whose ``weight`` is one of ``linear_tensors`` through a per-tensor
    e4m3 quantization when the step holds more than 8 tokens; returns how many modules were hooked.
    ``jitter``: each input element first scaled by 1 ± jitter (random signs), as other kernels' rounding
    moves it. The step's tokens are the model's input ids, not the module input's rows: transformers'
    DeepSeek-V2 runs kv_b_proj over every cached latent at each decode step, where the engine runs it over
    the step's tokens."""
    step = {"tokens": 0}

    def count_step_tokens(_model, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        step["tokens"] = ids.numel() if ids is not None else kwargs["inputs_embeds"].shape[:-1].numel()

    def quantize_input(_module, args):
        if step["tokens"] <= WEIGHT_ONLY_MAX_TOKENS:
            return None
        return (_fake_e4m3(args[0], jitter), *args[1:])

    model.register_forward_pre_hook(count_step_tokens, with_kwargs=True)
    hooked = 0
    for name, module in model.named_modules():
        if f"{name}.weight" in linear_tensors:
            module.register_forward_pre_hook(quantize_input)
            hooked += 1
        elif _is_experts_module(module):
            module.forward = _fp8_experts_forward(module, step, jitter)
    return hooked


def _fake_e4m3(x: torch.Tensor, jitter: float = 0.0) -> torch.Tensor:
    """x through a per-tensor e4m3 quantization: one scale absmax / 448, the codes of x times the scale's
    reciprocal (rounded once), as the contract says (ops.py: as the FP8 KV cache's write, a product per value
    rather than a division). ``jitter``: each element first scaled by 1 ± jitter (random signs)."""
    if jitter:
        x = x * torch.where(torch.rand_like(x) < 0.5, 1 - jitter, 1 + jitter)
    scale = (x.abs().amax().double() / E4M3_MAX).float()
    if scale == 0:
        return x
    return (x * torch.reciprocal(scale)).to(torch.float8_e4m3fn).to(x.dtype) * scale.to(x.dtype)


def _is_experts_module(module: torch.nn.Module) -> bool:
    """transformers' stacked experts (gate_up_proj [E, 2F, H], down_proj [E, H, F], act_fn): every MoE family."""
    return all(getattr(getattr(module, p, None), "dim", lambda: 0)() == 3 for p in ("gate_up_proj", "down_proj")) \
        and hasattr(module, "act_fn")


def _fp8_experts_forward(module: torch.nn.Module, step: dict, jitter: float):
    """The experts' forward as FP8 GEMMs see it in a step of more than 8 tokens (the engine's contract, ops.py):
    the step's x through one per-tensor e4m3 quantization, every pick's act(gate) · up through one more (over
    all the step's picks), products in x's dtype; the module's own forward in smaller steps. ``jitter`` as
    ``hook_fp8_inputs``'s, before each quantization."""
    plain = module.forward

    def forward(hidden_states, top_k_index, top_k_weights):
        if step["tokens"] <= WEIGHT_ONLY_MAX_TOKENS:
            return plain(hidden_states, top_k_index, top_k_weights)
        x = _fake_e4m3(hidden_states, jitter)
        routed = [(expert, *torch.where(top_k_index == expert)) for expert in range(module.gate_up_proj.shape[0])]
        routed = [(expert, tokens, slots) for expert, tokens, slots in routed if tokens.numel()]
        activated = []
        for expert, tokens, _ in routed:
            gate, up = torch.nn.functional.linear(x[tokens], module.gate_up_proj[expert]).chunk(2, dim=-1)
            activated.append(module.act_fn(gate) * up)
        seen = _fake_e4m3(torch.cat(activated), jitter).split([a.shape[0] for a in activated])
        out = torch.zeros_like(hidden_states)
        for (expert, tokens, slots), h in zip(routed, seen):
            down = torch.nn.functional.linear(h, module.down_proj[expert])
            out.index_add_(0, tokens, down * top_k_weights[tokens, slots, None])
        return out
    return forward


@torch.no_grad()
def reference_greedy(folder: Path, token_lists: Sequence[Sequence[int]], new_tokens: int, mode: str,
                     linear_tensors: set[str], min_margin: float = 1e-3) -> list[list[int]]:
    """transformers' greedy tokens, float32, each prompt alone; a near-tie is an AssertionError."""
    model = reference_model(folder, mode, linear_tensors)
    expected = []
    for ids in token_lists:
        tokens, logits = greedy_with_logits(model, ids, new_tokens)
        top2 = logits.topk(2, dim=-1).values
        margin = float((top2[:, 0] - top2[:, 1]).min())
        assert margin >= min_margin, f"fixture problem: a near-tie ({margin:.1e}) in {folder}"
        expected.append(tokens)
    return expected


def reference_model(folder: Path, mode: str, linear_tensors: set[str], jitter: float = 0.0):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    if mode == "fp8":
        hooked = hook_fp8_inputs(model, linear_tensors, jitter)
        assert hooked == len(linear_tensors), f"hooked {hooked} of the {len(linear_tensors)} quantized linears"
    return model


def greedy_with_logits(model, ids: Sequence[int], new_tokens: int) -> tuple[list[int], torch.Tensor]:
    """The greedy new ids and each step's logits [new_tokens, vocab] (float32), EOS ignored."""
    out = model.generate(torch.tensor([list(ids)]), do_sample=False, max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0, output_logits=True,
                         return_dict_in_generate=True)
    return out.sequences[0, len(ids):].tolist(), torch.stack(out.logits)[:, 0].float()


@torch.no_grad()
def fp8_comparable_steps(folder: Path, token_lists: Sequence[Sequence[int]], new_tokens: int,
                         linear_tensors: set[str], jitter: float = 1e-4) -> list[int]:
    """Mode "fp8" on other kernels: rounding differences far below float32's visible digits move some
    activations across an e4m3 rounding boundary (a step of 1/8 of their size), so the greedy choice is
    comparable only while it stands clear of that. Per prompt: the steps before the first one whose
    top-1/top-2 margin is within twice the logits' change when every quantized input is jittered by
    ``jitter`` (relative) before its e4m3 step, or whose jittered greedy choice differs. 1e-4: Hopper's
    FP8 tensor cores sum with about 14 mantissa bits, and the float32 GEMM-path test measured 4e-4 off the
    exact sum at K = 64 on the H200; with 1e-6 the tiny models' fp8 greedy parted on the H200 where this
    said it stood clear (mistral, gemma, qwen3_moe). On these random tiny models that leaves most prompts
    of more than 8 tokens uncompared: the FP8 GEMM path is checked by the kernel tests at real shapes and
    by the trained model's perplexity (tests/test_quant_quality.py, in benchmarks/gpu_checks.sh)."""
    plain = reference_model(folder, "fp8", linear_tensors)
    jittered = reference_model(folder, "fp8", linear_tensors, jitter)
    steps = []
    for ids in token_lists:
        tokens, logits = greedy_with_logits(plain, ids, new_tokens)
        moved_tokens, moved = greedy_with_logits(jittered, ids, new_tokens)
        top2 = logits.topk(2, dim=-1).values
        tie = (top2[:, 0] - top2[:, 1]) <= 2 * (logits - moved).abs().amax(dim=-1)
        parted = [s for s in range(new_tokens) if tokens[s] != moved_tokens[s]]
        steps.append(min([new_tokens, *parted, *tie.nonzero().flatten().tolist()]))
    return steps
