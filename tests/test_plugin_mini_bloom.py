"""ALiBi from a plugin outside the core tree: tests/plugins/mini_bloom (HF Bloom), installed the way pip
would install a third party's distribution, against HF transformers' BloomForCausalLM on tiny random
checkpoints (6 heads: slopes of a non-power-of-two head count; 8 heads: a power of two), in float32.
It registers "bloom" at a higher priority than the shipped mii-plugin-bloom (architectures/bloom), so it
also shows a third party replacing a shipped family; tests/test_arch_bloom.py tests the shipped one."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers import BloomConfig, BloomForCausalLM

from support.fake_plugins import GROUP
from support.family_parity import SCHEDULES, TinyFamily, assert_greedy_matches_hf
from support.prompts import MIXED_PROMPTS

PLUGIN_ROOT = Path(__file__).parent / "plugins" / "mini_bloom"
SHAPE = dict(n_layer=2, initializer_range=1.0)
VARIANTS = {"6-heads": dict(hidden_size=96, n_head=6), "8-heads": dict(hidden_size=64, n_head=8)}
SEEDS = {"6-heads": 1, "8-heads": 4}  # clear greedy margins, varied references
# the loud fixtures' logits reach ~35: float32 summation order alone moves them by up to ~4e-4 (one
# prompt position does even in one put); a wrong bias or position moves them by whole units
LOGITS_TOLERANCE = dict(atol=1e-3, rtol=0)
pytestmark = pytest.mark.usefixtures("bloom_plugin")  # every pipeline here is made with the plugin installed


@pytest.fixture(scope="module")
def bloom_plugin(tmp_path_factory):
    """The plugin's folder on sys.path and a dist-info naming its entry point, as ``pip install`` leaves
    them; the plugin manager reloads to find it, and forgets it after the module."""
    from mii_core.plugins import get_plugins, reset_plugins

    site = tmp_path_factory.mktemp("site")
    dist_info = site / "mii_plugin_mini_bloom-0.0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: mii-plugin-mini-bloom\nVersion: 0.0.1\n")
    (dist_info / "entry_points.txt").write_text(f"[{GROUP}]\nmini_bloom = mii_plugin_mini_bloom.plugin\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        patch.syspath_prepend(str(PLUGIN_ROOT))
        patch.delenv("MII_CORE_PLUGINS", raising=False)
        reset_plugins()
        assert get_plugins().architectures.served_by("bloom").target.startswith("mii_plugin_mini_bloom."), \
            "the outside plugin must serve bloom over the shipped one"
        yield
        reset_plugins()
    for name in [n for n in sys.modules if n.startswith("mii_plugin_mini_bloom")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def bloom(tmp_path_factory):
    return TinyFamily(tmp_path_factory.mktemp, BloomForCausalLM, BloomConfig, SHAPE, VARIANTS, SEEDS)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_greedy_matches_hf(bloom, oracle, pipeline, variant, schedule):
    assert_greedy_matches_hf(pipeline, oracle, bloom.path(variant), schedule)


@pytest.mark.parametrize("chunk_ends", [None, (5, 11, 12, 20)], ids=["one-put", "chunks"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_prompt_logits_match_hf(bloom, oracle, pipeline, variant, chunk_ends):
    """The last token's logits after each put (a whole prompt, or the prompt in chunks that straddle the
    KV blocks), then after each of a few decode steps, against HF's logits at the same positions."""
    path = bloom.path(variant)
    hf = oracle(path)
    ids = hf.encode(MIXED_PROMPTS[5])
    assert len(ids) > 24
    with torch.no_grad():
        expected = hf.model(torch.tensor([ids])).logits[0]
    prompt, continuation = ids[:-4], ids[-4:]
    ends = [*(chunk_ends or ()), len(prompt)]
    engine = pipeline(path, inference_engine_config={"state_manager": {"kv_block_size": 4}}).engine
    try:
        for start, end in zip([0, *ends], ends):
            logits = engine.put([11], [prompt[start:end]])
            torch.testing.assert_close(logits[0], expected[end - 1], **LOGITS_TOLERANCE)
        for offset, token in enumerate(continuation):
            logits = engine.put([11], [[token]])
            torch.testing.assert_close(logits[0], expected[len(prompt) + offset], **LOGITS_TOLERANCE)
    finally:
        engine.flush(11)


def test_slopes_are_hfs():
    """The plugin's slopes against HF's build_alibi_tensor (one sequence: slope_h * j) for several counts."""
    from mii_plugin_mini_bloom.blocks import alibi_slopes
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    for heads in (1, 3, 6, 8, 12, 16):
        hf = build_alibi_tensor(torch.ones(1, 2), heads, torch.float32)[:, 0, 1]  # key position 1
        torch.testing.assert_close(alibi_slopes(heads), hf, atol=0, rtol=0)

