"""One tiny checkpoint per architecture plugin (and per sharding case worth its own: Falcon-7B's single
KV head replicated on both ranks, OPT-350m's replicated project in/out), built with the families' own
builders (support/arch_checkpoints.py) so the tensor-parallel tests run on the checkpoints HF already vouches for."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from support import arch_checkpoints as arch


def _ours(builder: arch.Builder) -> Callable[[Callable[[str], Path]], Path]:
    return lambda mktemp: builder(mktemp)[0]


# name -> builder(mktemp) -> checkpoint folder
TP_CHECKPOINTS: dict[str, Callable] = {
    "llama": _ours(arch.llama("gqa")),
    "mistral": _ours(arch.family("test_arch_mistral", "full")),
    # sliding window: blocks behind it freed alike on every rank
    "mistral-window": _ours(arch.family("test_arch_mistral", "window")),
    "mixtral": _ours(arch.family("test_arch_mixtral", "full")),
    "qwen2": _ours(arch.family("test_arch_qwen2", "tied")),
    "qwen": _ours(arch.qwen_v1),
    "falcon-7b": _ours(arch.family("test_arch_falcon", "7b")),    # one KV head: replicated on both ranks
    "falcon-40b": _ours(arch.family("test_arch_falcon", "40b")),  # grouped KV heads, interleaved fused qkv
    "phi": _ours(arch.family("test_arch_phi", "phi2")),           # biased LM head, split with the vocabulary
    "opt-350m": _ours(arch.family("test_arch_opt", "350m")),      # post-norm, project in/out replicated
    "bloom": _ours(arch.family("test_arch_bloom", "6-heads")),    # ALiBi: each rank keeps its heads' slopes
    "mpt": _ours(arch.family("test_arch_mpt", "clip")),           # ALiBi, q/k/v clamped on each rank's shard
    "phi3": _ours(arch.family("test_arch_phi3", "longrope")),     # fused qkv and gate_up split on each rank
    "qwen2-moe": _ours(arch.family("test_arch_qwen2_moe", "mixed")),  # shared expert and its gate, dense layer
    "qwen3-moe": _ours(arch.family("test_arch_qwen3_moe", "mixed")),  # q/k head norms on each rank's heads
    "gemma3": _ours(arch.family("test_arch_gemma3_text", "pattern")),  # a rope per layer type, sandwich norms
    # latent attention: each rank its heads' rows of q_proj / kv_b_proj, kv_a_proj whole; grouped routing
    "deepseek-v2": _ours(arch.family("test_arch_deepseek_v2", "q-proj-grouped")),
    "gpt2-kit": _ours(arch.gpt2_kit),                             # the kit's plugin: Conv1D stored transposed
    "gptj": _ours(arch.family("test_arch_gptj", "partial")),      # q/k rows permuted whole, then split by head
    "gpt-neo": _ours(arch.family("test_arch_gpt_neo", "alternating")),  # a window on every other layer
}
