"""Quantization quality, measured: held-out perplexity of a tiny Llama trained on Python's standard library
(tests/quality/tiny_trained.py), scored by the engine in each mode against the unquantized model: FP8
(weights; weights and activations; and with the FP8 KV cache) within 1%, FP6 within 3%."""
import math

import pytest

import mii_core
from mii_core.requests import generation_options
from quality.tiny_trained import heldout_chunks, tiny_trained_checkpoint

LIMITS = {"fp8": 0.01, "wf8af16": 0.01, "wf6af16": 0.03}
# a fixed KV cache (256 blocks) rather than most of the free memory: on a GPU this test runs beside other
# check processes (benchmarks/gpu_checks.sh), where it checks the FP8 GEMM path on a model that means something
ENGINE = {"state_manager": {"memory_config": {"mode": "allocate", "size": 256}}}


@pytest.fixture(scope="module")
def trained():
    path = tiny_trained_checkpoint()
    return path, heldout_chunks(path)


def perplexity(path, chunks, mode, kv_cache_dtype="auto") -> float:
    """exp of the mean negative log-likelihood of every chunk token after the first, as the engine scores
    the prompt (prompt_logprobs: the raw logits' log-softmax)."""
    pipe = mii_core.pipeline(str(path), quantization_mode=mode,
                             inference_engine_config={**ENGINE, "kv_cache_dtype": kv_cache_dtype})
    try:
        options = generation_options({"max_new_tokens": 1, "do_sample": False, "prompt_logprobs": 0})
        responses = pipe.submit(None, options, prompt_ids=chunks).result()
    finally:
        pipe.destroy()
    # every chunk token after the first (which nothing precedes) is scored
    logprobs = [entry.logprob for response in responses for entry in response.prompt_logprobs if entry is not None]
    assert len(logprobs) == sum(len(chunk) - 1 for chunk in chunks)
    return math.exp(-sum(logprobs) / len(logprobs))


def test_the_trained_model_learned_something(trained):
    path, chunks = trained
    # a uniform guess over the 512-token vocabulary scores 512; the trained model far less
    assert perplexity(path, chunks, None) < 40


@pytest.mark.parametrize("mode", sorted(LIMITS))
def test_quantized_perplexity_stays_close(trained, mode):
    path, chunks = trained
    base, quantized = perplexity(path, chunks, None), perplexity(path, chunks, mode)
    change = quantized / base - 1
    print(f"{mode}: perplexity {quantized:.4f} vs {base:.4f} unquantized ({change:+.2%})")
    assert change < LIMITS[mode], f"{mode} raised the held-out perplexity by {change:.2%} ({base:.3f} -> {quantized:.3f})"


def test_fp8_weights_and_fp8_kv_cache_stay_within_one_percent(trained):
    """Mode "fp8" with K and V stored in e4m3 (kv_cache_dtype "fp8"): the prompt's attention reads the cache,
    so its perplexity moves from the weights-only figure (checked: else the cache would not be in play)."""
    path, chunks = trained
    base, weights_only = perplexity(path, chunks, None), perplexity(path, chunks, "fp8")
    with_kv = perplexity(path, chunks, "fp8", kv_cache_dtype="fp8")
    change = with_kv / base - 1
    print(f"fp8 + FP8 KV: perplexity {with_kv:.4f} vs {base:.4f} unquantized ({change:+.2%}); "
          f"weights only {weights_only:.4f}")
    assert with_kv != weights_only, "the FP8 KV cache changed nothing: the prompt did not read it"
    assert change < LIMITS["fp8"], f"fp8 + FP8 KV raised the held-out perplexity by {change:.2%}"
