"""The plugin's parity test, written with mii-core's public test kit (``mii_core.testing``): a tiny random
GPT-2 made with transformers, greedy tokens from mii-core against transformers' own generate, under every
schedule the engine can take. Run it from this folder with ``pytest`` once the plugin is installed
(``pip install -e ".[test]"``)."""
import pytest
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

from mii_core.testing import SCHEDULES, assert_greedy_matches_hf, build_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256,
                        initializer_range=0.2)  # large weights: wide greedy margins
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-gpt2"), GPT2LMHeadModel, config, seed=0)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_greedy_matches_transformers(checkpoint, schedule):
    assert_greedy_matches_hf(checkpoint, schedule)


def test_hub_names_without_transformer_prefix(checkpoint, tmp_path):
    """The original gpt2 files on the hub name tensors "h.0.attn.c_attn.weight": checkpoint_prefix."""
    for file in checkpoint.iterdir():
        if file.name != "model.safetensors":
            (tmp_path / file.name).write_bytes(file.read_bytes())
    tensors = load_file(checkpoint / "model.safetensors")
    save_file({n.removeprefix("transformer."): t for n, t in tensors.items()}, tmp_path / "model.safetensors")
    assert "h.0.attn.c_attn.weight" in load_file(tmp_path / "model.safetensors")
    assert_greedy_matches_hf(tmp_path, "whole")
