"""One tiny checkpoint per architecture variant, built exactly as the family's tests build it (their own
builders, seeds and shapes), for the suites that run every family at once: tensor parallelism
(support/tp_families.py) and the GPU parity script (benchmarks/gpu_parity.py).

Each builder takes ``mktemp(label) -> new folder`` and returns ``(ours, reference)``: the folder the engine
loads and the one HF transformers loads as the oracle (the same, except Qwen v1, which HF lacks: HF Qwen2
reads the folder it was converted from).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from support.qwen_v1 import build_tiny_qwen2, convert_to_qwen_v1
from support.tiny_llama import VARIANT_SEEDS, VARIANTS as LLAMA_VARIANTS, build_tiny_llama

Built = tuple[Path, Path]
Builder = Callable[[Callable[[str], Path]], Built]
QWEN_V1_SEQ_LENGTH = 2048  # as real Qwen configs: NTK and logn on, past every test prompt's length

__all__ = ["LLAMA_VARIANTS", "family", "folder_maker", "gpt2_kit", "llama", "qwen_v1"]


def folder_maker(root: Path) -> Callable[[str], Path]:
    """``mktemp(label)``: a new folder under ``root`` (as pytest's tmp_path_factory.mktemp)."""
    return lambda label: Path(tempfile.mkdtemp(prefix=f"{label}-", dir=root))


def llama(variant: str) -> Builder:
    def build(mktemp) -> Built:
        path = build_tiny_llama(mktemp(f"llama-{variant}"), variant=variant, seed=VARIANT_SEEDS[variant])
        return path, path
    return build


def family(module_name: str, variant: str) -> Builder:
    """A variant of the family of a tests/test_arch_<family>.py module, made by its ``tiny_family(mktemp)``
    (the module is imported by name: tests/ must be on sys.path)."""
    def build(mktemp) -> Built:
        path = __import__(module_name).tiny_family(mktemp).path(variant)
        return path, path
    return build


def qwen_v1(mktemp) -> Built:
    qwen2 = build_tiny_qwen2(mktemp("qwen-src"), seed=0)
    return convert_to_qwen_v1(qwen2, mktemp("qwen"), seq_length=QWEN_V1_SEQ_LENGTH), qwen2


def gpt2_kit(mktemp) -> Built:
    """For the third-party kit's worked plugin (plugins/example-gpt2): Conv1D weights stored transposed."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from support.tiny_models import build_tiny_checkpoint

    config = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, initializer_range=0.2)
    path = build_tiny_checkpoint(mktemp("gpt2"), GPT2LMHeadModel, config, seed=0)
    return path, path
