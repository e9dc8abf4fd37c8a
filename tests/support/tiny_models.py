"""Build a tiny random checkpoint of any HF causal-LM family, the way tiny_llama.py builds Llama.

    build_tiny_checkpoint(folder, MistralForCausalLM, MistralConfig(...), seed=0)

The config needs no vocab or special-token ids: they come from the shared tiny tokenizer. Weights are
"loud" (a large init range, a rescaled LM head) so greedy decoding has wide margins; see tiny_llama.py.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import GenerationConfig

from support.tiny_llama import mark_tokenizer_class, train_tokenizer


@torch.no_grad()
def scale_output_embeddings(model, logit_std: float, width: int) -> None:
    weight = model.get_output_embeddings().weight
    weight.mul_(logit_std / width ** 0.5 / weight.std())


def build_tiny_checkpoint(path, model_cls, config, *, seed: int = 0, vocab_size: int = 400,
                          logit_std: float = 8.0, **save_kwargs) -> Path:
    """Write config, random float32 weights, tokenizer and generation config to ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(vocab_size)
    config.vocab_size = len(tokenizer)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = None
    with torch.random.fork_rng():  # seeded weights without resetting the caller's RNG
        torch.manual_seed(seed)
        model = model_cls(config).to(torch.float32).eval()
    width = model.get_output_embeddings().weight.shape[1]
    scale_output_embeddings(model, logit_std, width)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.eos_token_id)
    model.save_pretrained(path, **save_kwargs)
    tokenizer.save_pretrained(path)
    mark_tokenizer_class(path / "tokenizer_config.json")
    return path
