"""A family owns its quirks: the core's source names none of Qwen v1's (its NTK rope, log-n scaling), which
live in architectures/qwen; the prefix cache learns what a prompt's K/V depend on from the model's
``prompt_variant`` hook, the core's decoder answering None (tokens alone) for every spec-built model."""
from pathlib import Path

import torch

import mii_core

QWEN_QUIRKS = ("qwen_dynamic", "logn", "ntk_alpha", "use_dynamic_ntk")


def test_the_core_names_no_qwen_quirk():
    core = Path(mii_core.__file__).parent
    found = {str(p.relative_to(core)): word for p in core.rglob("*.py") for word in QWEN_QUIRKS
             if word in p.read_text().lower()}
    assert not found, f"family quirks named in the core: {found}"


def test_spec_built_models_key_prompts_by_tokens_alone():
    from mii_core.model.decoder import DecoderModel
    from mii_core.model.ops import KernelSet
    from mii_core.distributed.parallel_context import ParallelContext
    from mii_core.model.spec import DecoderSpec
    from mii_core.plugins import get_plugins

    spec = DecoderSpec(vocab_size=32, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8,
                       intermediate_size=32, max_position_embeddings=64)
    model = DecoderModel(spec, ParallelContext(), KernelSet("cpu", get_plugins().kernels),
                         torch.device("cpu"), torch.float32)
    assert [model.prompt_variant(n) for n in (1, 64, 10_000)] == [None, None, None]
