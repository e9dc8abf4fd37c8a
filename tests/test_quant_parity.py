"""Greedy output of each quantization mode equals, token for token, that of an independent PyTorch
reference of the same mode (tests/support/quant_reference.py: transformers' model on the dequantized
weights), on one tiny checkpoint of every architecture plugin, each prompt alone (so that "fp8"'s
per-tensor activation scale covers the same tokens on both sides). float32 activations on any device: on a
GPU (benchmarks/gpu_checks.sh) the same test runs the Triton kernels and decode graphs; there mode "fp8"
is compared up to the first step that its e4m3 rounding makes a tie (fp8_comparable_steps), since the
GPU's float32 kernels round differently from the CPU reference and an activation on an e4m3 rounding
boundary may then take the neighbouring code."""
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

import mii_core
from mii_core.engine.builder import load_policy
from mii_core.testing.parity import PROMPTS
from support import arch_checkpoints as arch
from support.quant_reference import fp8_comparable_steps, quantized_targets, reference_greedy, write_reference

MODES = ("fp8", "wf8af16", "wf6af16")
NEW_TOKENS = 10
# a fixed small KV cache (8,192 tokens at most) and graphs for batch 1 and 2 only: quick to build on any
# device, and several such processes fit one GPU side by side (benchmarks/gpu_checks.sh)
ENGINE = {"state_manager": {"memory_config": {"mode": "allocate", "size": 64}}, "cuda_graph_max_batch_size": 2}
QUANT_PROMPTS = (PROMPTS[1], PROMPTS[3])  # 3 tokens (weight-only in every mode) and more than 8

FAMILIES = {
    "llama": arch.llama("gqa"),
    "mistral": arch.family("test_arch_mistral", "full"),
    "mixtral": arch.family("test_arch_mixtral", "full"),
    "qwen2": arch.family("test_arch_qwen2", "tied"),
    "qwen": arch.qwen_v1,
    "falcon": arch.family("test_arch_falcon", "40b"),
    "phi": arch.family("test_arch_phi", "phi2"),
    "opt": arch.family("test_arch_opt", "350m"),
    "qwen3": arch.family("test_arch_qwen3", "gqa"),
    "gemma": arch.family("test_arch_gemma", "mqa"),
    "gemma2": arch.family("test_arch_gemma2", "window"),
    "gpt_neox": arch.family("test_arch_gpt_neox", "parallel"),
    "bloom": arch.family("test_arch_bloom", "6-heads"),
    "mpt": arch.family("test_arch_mpt", "clip"),
    "starcoder2": arch.family("test_arch_starcoder2", "no-bias"),
    "phi3": arch.family("test_arch_phi3", "longrope"),
    "qwen2_moe": arch.family("test_arch_qwen2_moe", "mixed"),
    "qwen3_moe": arch.family("test_arch_qwen3_moe", "mixed"),
    "gemma3_text": arch.family("test_arch_gemma3_text", "pattern"),
    "deepseek_v2": arch.family("test_arch_deepseek_v2", "q-lora"),
    "gpt2": arch.gpt2_kit,
    "gptj": arch.family("test_arch_gptj", "partial"),
    "gpt_neo": arch.family("test_arch_gpt_neo", "alternating"),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def checkpoints(request, tmp_path_factory) -> tuple[Path, Path]:
    return FAMILIES[request.param](tmp_path_factory.mktemp)


@pytest.mark.parametrize("mode", MODES)
def test_quantized_greedy_matches_reference(checkpoints, mode, tmp_path):
    ours, reference = checkpoints
    tokenizer = AutoTokenizer.from_pretrained(str(ours))
    token_lists = [tokenizer(prompt)["input_ids"] for prompt in QUANT_PROMPTS]
    assert len(token_lists[0]) <= 8 < len(token_lists[1])
    pipe = mii_core.pipeline(str(ours), quantization_mode=mode, dtype="float32", inference_engine_config=ENGINE)
    try:
        got = [list(pipe.generate_tokens([ids], max_new_tokens=NEW_TOKENS, do_sample=False,
                                         ignore_eos=True)[0].token_ids) for ids in token_lists]
        quantized = quantized_targets(pipe.engine.model)
    finally:
        pipe.destroy()
    folder, linears = write_reference(reference, tmp_path / "reference", load_policy(reference), quantized, mode)
    assert linears, "no linear of the checkpoint was quantized"
    expected = reference_greedy(folder, token_lists, NEW_TOKENS, mode, linears)
    if mode == "fp8" and torch.cuda.is_available():  # the GPU's kernels: compared up to an e4m3 rounding tie
        steps = fp8_comparable_steps(folder, token_lists, NEW_TOKENS, linears)
        assert sum(steps) > 0, "every step is an e4m3 rounding tie: nothing compared"
        got, expected = [g[:s] for g, s in zip(got, steps)], [e[:s] for e, s in zip(expected, steps)]
    assert got == expected
