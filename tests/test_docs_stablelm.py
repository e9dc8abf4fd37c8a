"""A family built from the docs alone: the StableLM policy printed in docs/adding-an-architecture.md ("A
Llama-like family in 37 lines"), with the hook of its step 3, installed as a third party's distribution
and checked with the public test kit (mii_core.testing) against transformers' StableLmForCausalLM, both
layouts, every schedule. If the page's code or the kit's names drift, this fails."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from transformers import StableLmConfig, StableLmForCausalLM

from mii_core.testing import SCHEDULES, assert_greedy_matches_hf, build_tiny_checkpoint
from support.fake_plugins import install_fake_plugin

DOC = Path(__file__).resolve().parents[1] / "docs" / "adding-an-architecture.md"
SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.15)
VARIANTS = {  # the two layouts the page names, with q/k/v biases and a quarter of each head rotated
    "sequential": dict(use_parallel_residual=False, use_qkv_bias=True, partial_rotary_factor=0.25),
    "parallel": dict(use_parallel_residual=True, use_qkv_bias=False, partial_rotary_factor=0.5),
}


def documented_policy() -> str:
    section = DOC.read_text().split("## A Llama-like family in 37 lines", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks and "class StableLmPolicy" in blocks[0], "the page no longer shows the StableLM policy"
    return blocks[0]


def documented_hook(policy_module: str) -> str:
    step3 = DOC.read_text().split("## Step 3: the hook", 1)[1]
    hook = re.findall(r"```python\n(.*?)```", step3, re.S)[0]
    assert 'registry.register("gpt2", "mii_plugin_gpt2.policy:GPT2Policy")' in hook
    # the page: "registering "stablelm" -> "mii_plugin_stablelm.policy:StableLmPolicy""
    return hook.replace('"gpt2", "mii_plugin_gpt2.policy:GPT2Policy"', f'"stablelm", "{policy_module}:StableLmPolicy"')


@pytest.fixture(scope="module")
def stablelm_plugin(tmp_path_factory):
    """The page's policy module and hook as an installed distribution, as ``pip install`` leaves one."""
    from mii_core.plugins.manager import get_plugins, reset_plugins

    site = tmp_path_factory.mktemp("site")
    (site / "mii_docs_stablelm_policy.py").write_text(documented_policy())
    hook_module = install_fake_plugin(site, "stablelm_docs", documented_hook("mii_docs_stablelm_policy"))
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        patch.delenv("MII_CORE_PLUGINS", raising=False)
        reset_plugins()
        assert get_plugins().architectures.served_by("stablelm").plugin == "stablelm_docs"
        yield
        reset_plugins()
    for name in ("mii_docs_stablelm_policy", hook_module):
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return {name: build_tiny_checkpoint(tmp_path_factory.mktemp(f"stablelm-{name}"), StableLmForCausalLM,
                                        StableLmConfig(**SHAPE, **variant), seed=1)
            for name, variant in VARIANTS.items()}


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_documented_policy_matches_transformers(stablelm_plugin, checkpoints, variant, schedule):
    assert_greedy_matches_hf(checkpoints[variant], schedule)
