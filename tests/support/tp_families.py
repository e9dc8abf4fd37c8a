"""One tiny checkpoint per architecture plugin (and per sharding case worth its own: Falcon-7B's single
KV head replicated on both ranks, OPT-350m's replicated project in/out), built with the families' own
builders from tests/test_arch_*.py so the tensor-parallel tests run on the checkpoints HF already vouches for."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from support.family_parity import TinyFamily
from support.qwen_v1 import build_tiny_qwen2, convert_to_qwen_v1
from support.tiny_llama import build_tiny_llama


def _llama(folder: Callable[[str], Path]) -> Path:
    return build_tiny_llama(folder("llama"), variant="gqa", seed=2)


def _mistral(folder) -> Path:
    import test_arch_mistral

    return test_arch_mistral._write_checkpoint(folder("mistral"), "full")


def _mistral_window(folder) -> Path:
    import test_arch_mistral

    return test_arch_mistral._write_checkpoint(folder("mistral-window"), "window")


def _mixtral(folder) -> Path:
    import test_arch_mixtral

    return test_arch_mixtral._write_checkpoint(folder("mixtral"), "full")


def _qwen2(folder) -> Path:
    import test_arch_qwen2

    return test_arch_qwen2._write_checkpoint(folder("qwen2"), "tied")


def _qwen(folder) -> Path:
    qwen2 = build_tiny_qwen2(folder("qwen-src"), seed=0)
    return convert_to_qwen_v1(qwen2, folder("qwen"), seq_length=2048)


def _gpt2_kit(folder) -> Path:
    """The third-party kit's worked plugin (plugins/example-gpt2): Conv1D weights stored transposed."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from support.tiny_models import build_tiny_checkpoint

    config = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, initializer_range=0.2)
    return build_tiny_checkpoint(folder("gpt2"), GPT2LMHeadModel, config, seed=0)


def _family(module_name: str, variant: str):
    def build(folder) -> Path:
        module = __import__(module_name)
        family = TinyFamily(folder, module.FAMILY_MODEL, module.FAMILY_CONFIG, module.SHAPE, module.VARIANTS,
                            module.SEEDS, getattr(module, "VECTOR_SPREAD", {}))
        return family.path(variant)
    return build


# name -> builder(mktemp) -> checkpoint folder
TP_CHECKPOINTS: dict[str, Callable] = {
    "llama": _llama,
    "mistral": _mistral,
    "mistral-window": _mistral_window,  # sliding window: blocks behind it freed alike on every rank
    "mixtral": _mixtral,
    "qwen2": _qwen2,
    "qwen": _qwen,
    "falcon-7b": _family("test_arch_falcon", "7b"),    # one KV head: replicated on both ranks
    "falcon-40b": _family("test_arch_falcon", "40b"),  # grouped KV heads, interleaved fused qkv
    "phi": _family("test_arch_phi", "phi2"),           # biased LM head, split with the vocabulary
    "opt-350m": _family("test_arch_opt", "350m"),      # post-norm, project in/out replicated
    "gpt2-kit": _gpt2_kit,
}
