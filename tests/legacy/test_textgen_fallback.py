"""text-generation under mii_core.legacy for a model type no architecture plugin serves (CodeGen: no plugin
is planned for it) goes to HF ``generate``: the same texts as transformers' own greedy generate, prompt by
prompt; options the fallback lacks are named errors."""
from __future__ import annotations

import logging

import pytest
import torch
import transformers

import mii_core.legacy as mii
from mii_core.legacy.task import QueryError
from mii_core.plugins import get_plugins
from support.tiny_models import build_tiny_checkpoint

PROMPTS = ["Hello world", "DeepSpeed is a library for"]


@pytest.fixture(scope="module")
def codegen(tmp_path_factory):
    config = transformers.CodeGenConfig(n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=64,
                                        n_inner=64)
    return build_tiny_checkpoint(tmp_path_factory.mktemp("codegen"), transformers.CodeGenForCausalLM, config)


def hf_greedy(folder, prompt: str, new_tokens: int) -> str:
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def test_a_model_type_without_an_architecture_plugin_goes_to_hf_generate(codegen, caplog):
    assert "codegen" not in get_plugins().architectures.entries  # else this test no longer tests the fallback
    with caplog.at_level(logging.WARNING):
        handle = mii.deploy(task="text-generation", model=str(codegen), deployment_name="codegen",
                            deployment_type="non-persistent", mii_config={"device": "cpu", "enable_cuda_graph": True})
    assert "enable_cuda_graph ignored for text-generation of model_type 'codegen'" in caplog.text
    try:
        result = handle.query({"query": PROMPTS}, max_new_tokens=6, do_sample=False)
        assert result.response == [hf_greedy(codegen, p, 6) for p in PROMPTS]
        assert all(result.response) and result.response[0] != result.response[1]  # real, distinct texts
        full = handle.query({"query": PROMPTS[0]}, max_new_tokens=6, do_sample=False, return_full_text=True)
        assert full.response == [PROMPTS[0] + result.response[0]]
        sampled = [handle.query({"query": PROMPTS[0]}, max_new_tokens=6, seed=5, top_k=20).response
                   for _ in range(2)]
        assert sampled[0] == sampled[1]  # a seed makes sampling repeatable
        with pytest.raises(QueryError, match=r"option\(s\) \['stop'\] are not supported for model_type 'codegen'"):
            handle.query({"query": "x"}, stop=["."])
        with pytest.raises(ValueError, match="max_new_tokens"):
            handle.query({"query": "x"}, max_new_tokens=0)
        with pytest.raises(QueryError, match="text-generation query has no 'query' key"):
            handle.query({"prompt": "x"})
        with pytest.raises(QueryError, match="'query' must be a non-empty string"):
            handle.query({"query": []})
    finally:
        mii.terminate("codegen")


def test_a_model_hf_cannot_generate_with_is_a_clear_error(tmp_path):
    transformers.CLIPVisionConfig(hidden_size=8, intermediate_size=8, num_attention_heads=2, num_hidden_layers=1,
                                  image_size=8, patch_size=4).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"text-generation for model_type 'clip_vision_model': no architecture "
                                         r"plugin serves it, and transformers' AutoModelForCausalLM cannot load it"):
        mii.deploy(task="text-generation", model=str(tmp_path), deployment_name="vision-gen",
                   deployment_type="non-persistent", mii_config={"device": "cpu"})
