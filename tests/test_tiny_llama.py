"""The tiny-checkpoint builder and the HF oracle: the ground the engine tests stand on.

These checks make sure the fixtures can expose engine bugs: context and positions must move
the logits, llama3 RoPE scaling must matter, greedy choices must not be near-ties.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from support.prompts import MIXED_PROMPTS, many_prompts

BUILDER = Path(__file__).parent / "support" / "tiny_llama.py"
LONG_PROMPT = MIXED_PROMPTS[-1]


def test_variants_have_expected_shapes(checkpoint, variant):
    config = json.loads((checkpoint(variant) / "config.json").read_text())
    expected_kv_heads = {"mha": 4, "gqa": 2, "llama3": 2, "tied": 2}[variant]
    assert config["model_type"] == "llama"
    assert (config["hidden_size"], config["num_hidden_layers"], config["head_dim"]) == (64, 2, 16)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, expected_kv_heads)
    assert config["tie_word_embeddings"] is (variant == "tied")


def test_llama3_config_uses_hub_rope_keys(checkpoint):
    config = json.loads((checkpoint("llama3") / "config.json").read_text())
    assert config["rope_theta"] == 500000.0
    assert config["rope_scaling"]["rope_type"] == "llama3"
    assert config["rope_scaling"]["factor"] == 8.0
    assert "rope_parameters" not in config


def test_tied_checkpoint_has_no_separate_lm_head(checkpoint):
    from safetensors import safe_open

    with safe_open(checkpoint("tied") / "model.safetensors", "pt") as weights:
        assert "lm_head.weight" not in weights.keys()
        assert "model.embed_tokens.weight" in weights.keys()


def test_special_token_ids_agree(checkpoint):
    path = checkpoint("gqa")
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    generation = json.loads((path / "generation_config.json").read_text())
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == ("<s>", "</s>", "<unk>")
    for source in (config, generation):
        assert (source["bos_token_id"], source["eos_token_id"]) == (tokenizer.bos_token_id, tokenizer.eos_token_id)


def test_tokenizer_prepends_bos_and_round_trips(checkpoint):
    tokenizer = AutoTokenizer.from_pretrained(checkpoint("gqa"))
    ids = tokenizer(LONG_PROMPT)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.unk_token_id not in ids, "test prompts must use the corpus' characters only"
    assert tokenizer.decode(ids, skip_special_tokens=True) == LONG_PROMPT
    assert 200 <= len(tokenizer) <= 1000


def test_cli_writes_loadable_checkpoint(tmp_path):
    out = tmp_path / "cli-model"
    subprocess.run([sys.executable, str(BUILDER), str(out), "--variant", "mha", "--seed", "3"], check=True)
    model = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert model.config.num_key_value_heads == model.config.num_attention_heads == 4


def test_bin_format_has_only_pytorch_weights(checkpoint):
    path = checkpoint("gqa", weights_format="bin")
    assert (path / "pytorch_model.bin").is_file()
    assert not list(path.glob("*.safetensors"))


def test_builder_is_deterministic(tmp_path):
    from support.tiny_llama import build_tiny_llama
    from safetensors.torch import load_file

    first = load_file(build_tiny_llama(tmp_path / "a", variant="gqa") / "model.safetensors")
    second = load_file(build_tiny_llama(tmp_path / "b", variant="gqa") / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_early_context_moves_last_logits(checkpoint, oracle, variant):
    """An engine that mishandles attention or the KV cache must visibly change the output."""
    hf = oracle(checkpoint(variant))
    ids = hf.encode(LONG_PROMPT)
    altered = list(ids)
    altered[2] = ids[3]  # one early token changed
    change = (hf.last_logits(ids) - hf.last_logits(altered)).abs().max().item()
    assert change > 1.0


@torch.no_grad()
def test_llama3_rope_scaling_changes_logits(checkpoint, oracle):
    """An engine that ignored rope_scaling would produce visibly different logits."""
    path = checkpoint("llama3")
    scaled = oracle(path)
    unscaled_config = LlamaConfig.from_pretrained(path)
    unscaled_config.rope_parameters = {"rope_type": "default", "rope_theta": 500000.0}
    unscaled = LlamaForCausalLM.from_pretrained(path, config=unscaled_config, dtype=torch.float32).eval()
    ids = scaled.encode(LONG_PROMPT)
    reference = unscaled(torch.tensor([ids])).logits[0, -1]
    assert (scaled.last_logits(ids) - reference).abs().max().item() > 0.1


def test_greedy_references_are_unambiguous(checkpoint, oracle, variant):
    """The oracle itself asserts margin > 1e-3 and no EOS under ignore_eos."""
    hf = oracle(checkpoint(variant))
    for prompt in MIXED_PROMPTS:
        gen = hf.greedy(prompt, 24, ignore_eos=True)
        assert gen.generated_length == 24


def test_many_prompts_are_distinct_and_short():
    prompts = many_prompts(64)
    assert len(set(prompts)) == 64
    assert all(2 <= len(p.split()) <= 12 for p in prompts)


def test_oracle_rejects_near_ties(checkpoint, oracle):
    """The guard must bite: an impossible margin requirement has to fail."""
    import support.oracle as oracle_module

    hf = oracle(checkpoint("gqa"))
    saved = oracle_module.MIN_GREEDY_MARGIN
    oracle_module.MIN_GREEDY_MARGIN = 1e9
    try:
        with pytest.raises(AssertionError, match="near-tie"):
            hf.greedy.__wrapped__(hf, "river", 4)
    finally:
        oracle_module.MIN_GREEDY_MARGIN = saved
