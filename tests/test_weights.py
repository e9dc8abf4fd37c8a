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
