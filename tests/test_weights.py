"""Checkpoint formats: sharded safetensors, PyTorch .bin, transformers' own RoPE config layout."""

import json

import pytest

from support.compare import assert_responses_match
from support.prompts import MIXED_PROMPTS

NEW_TOKENS = 16


def assert_greedy_matches_hf(path, oracle, pipeline):
    references = [oracle(path).greedy(p, NEW_TOKENS, ignore_eos=True) for p in MIXED_PROMPTS]
    responses = pipeline(path)(MIXED_PROMPTS, do_sample=False, max_new_tokens=NEW_TOKENS, ignore_eos=True)
    assert_responses_match(responses, references)


@pytest.mark.parametrize("variant", ["gqa", "tied"])
def test_sharded_safetensors(checkpoint, oracle, pipeline, variant):
    path = checkpoint(variant, max_shard_size="20KB")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1, "fixture must really be sharded"
    assert not (path / "model.safetensors").exists()
    assert_greedy_matches_hf(path, oracle, pipeline)


@pytest.mark.parametrize("variant", ["gqa", "tied"])
def test_pytorch_bin(checkpoint, oracle, pipeline, variant):
    path = checkpoint(variant, weights_format="bin")
    assert (path / "pytorch_model.bin").is_file() and not list(path.glob("*.safetensors"))
    assert_greedy_matches_hf(path, oracle, pipeline)


def test_rope_parameters_config_layout(checkpoint, oracle, pipeline):
    """transformers >= 5 writes `rope_parameters` instead of `rope_theta` + `rope_scaling`."""
    path = checkpoint("llama3", config_style="transformers")
    config = json.loads((path / "config.json").read_text())
    assert config["rope_parameters"]["rope_type"] == "llama3" and "rope_scaling" not in config
    assert_greedy_matches_hf(path, oracle, pipeline)


HUB_ID = "tiny-org/tiny-llama"
HUB_LOAD_SCRIPT = """
import sys, mii_core
pipe = mii_core.pipeline(sys.argv[1])
print(repr(pipe(sys.argv[2], do_sample=False, max_new_tokens=int(sys.argv[3]), ignore_eos=True)[0].generated_text))
"""


def _lay_out_hub_cache(path, cache_dir):
    """The folder layout huggingface_hub keeps: refs/main names a snapshot holding the files."""
    import shutil

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache_dir / ("models--" + HUB_ID.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)
    shutil.copytree(path, repo_dir / "snapshots" / revision)


def test_hub_id_loads_from_hub_cache_offline(checkpoint, oracle, tmp_path):
    """A hub id with no network: the real loading path, answered from the hub cache."""
    import os
    import subprocess
    import sys

    path = checkpoint("gqa")
    _lay_out_hub_cache(path, tmp_path / "hub")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    prompt = MIXED_PROMPTS[1]
    result = subprocess.run([sys.executable, "-c", HUB_LOAD_SCRIPT, HUB_ID, prompt, str(NEW_TOKENS)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = oracle(path).greedy(prompt, NEW_TOKENS, ignore_eos=True)
    assert result.stdout.strip().splitlines()[-1] == repr(expected.text)


def test_unknown_hub_id_offline_is_a_clear_error(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty-hub"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", HUB_LOAD_SCRIPT, "nobody/no-such-model", "hi", "2"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "ValueError" in result.stderr and "nobody/no-such-model" in result.stderr
