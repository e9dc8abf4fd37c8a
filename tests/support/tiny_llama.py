"""Build tiny random-weight Llama checkpoints (HF layout) for tests and demos.

Everything is made locally with `transformers` and `tokenizers`: no model hub access.

    python tests/support/tiny_llama.py OUT_DIR [--variant gqa|mha|llama3|tied] [--seed 0]

The weights are random but deliberately *loud*: a large initializer range makes attention and
the MLPs move the residual stream (so context, positions and the KV cache matter to the
output), and the LM head is rescaled so the logits spread widely; the gap between the best
and second-best next token is then far above float32 noise and greedy decoding does not flip
between two implementations that round differently.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# The tokenizer and its corpus are mii_core.testing's (public, for plugin authors too); test prompts are
# made of the corpus's words.
from mii_core.testing.tiny import CORPUS, mark_tokenizer_class, train_tokenizer  # noqa: F401 (re-exported)

VARIANTS = ("mha", "gqa", "llama3", "tied")
# Seeds chosen so that every reference run used by the tests is unambiguous (see
# HFOracle._check_unambiguous): no greedy near-ties, no EOS under ignore_eos.
VARIANT_SEEDS = {"mha": 0, "gqa": 2, "llama3": 1, "tied": 0}

# Shapes shared by all variants; only attention layout, RoPE and tying differ.
BASE_SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    head_dim=16,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
)

# Weight init std per variant. A tied model's input embeddings are its (rescaled, large) LM head,
# so its layers need a larger init to matter; otherwise greedy just repeats the last token.
INITIALIZER_RANGE = {"mha": 0.15, "gqa": 0.15, "llama3": 0.15, "tied": 0.3}

LLAMA3_ROPE_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    # Small, so that the scaled band covers frequencies that rotate noticeably within a short prompt.
    "original_max_position_embeddings": 64,
}


def make_config(variant: str, tokenizer: PreTrainedTokenizerFast, initializer_range: float) -> LlamaConfig:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    num_kv_heads = 4 if variant == "mha" else 2
    rope = {"rope_type": "default", "rope_theta": 10000.0}
    if variant == "llama3":
        rope = {**LLAMA3_ROPE_SCALING, "rope_theta": 500000.0}
    return LlamaConfig(
        **BASE_SHAPE,
        vocab_size=len(tokenizer),
        num_key_value_heads=num_kv_heads,
        rope_parameters=rope,
        tie_word_embeddings=(variant == "tied"),
        initializer_range=initializer_range,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
        dtype="float32",
    )


@torch.no_grad()
def scale_lm_head(model: LlamaForCausalLM, logit_std: float) -> None:
    """Rescale the output projection so logits have roughly `logit_std` spread.

    The final RMSNorm makes hidden states ~unit RMS, so logit std ~= sqrt(hidden) * std(W).
    For a tied model this also scales up the input embeddings (see INITIALIZER_RANGE).
    """
    weight = model.lm_head.weight
    target = logit_std / model.config.hidden_size**0.5
    weight.mul_(target / weight.std())


def build_tiny_llama(
    path,
    *,
    variant: str = "gqa",
    seed: int = 0,
    vocab_size: int = 400,
    initializer_range: float | None = None,
    logit_std: float = 8.0,
    config_style: str = "hub",
    weights_format: str = "safetensors",
    **save_kwargs,
) -> Path:
    """Write a complete HF checkpoint folder (config, weights, tokenizer) to `path`.

    config_style="hub" writes RoPE settings the way Llama checkpoints on the Hub have them
    (top-level `rope_theta`, `rope_scaling`); "transformers" keeps transformers' own
    `rope_parameters` layout. weights_format="bin" leaves a single PyTorch `pytorch_model.bin`
    instead of safetensors. `save_kwargs` go to `save_pretrained` (e.g. max_shard_size="20KB").
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(vocab_size)
    config = make_config(variant, tokenizer, initializer_range or INITIALIZER_RANGE.get(variant, 0.15))
    with torch.random.fork_rng():  # seeded weights without resetting the caller's RNG
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.float32).eval()
    scale_lm_head(model, logit_std)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    model.save_pretrained(path, **save_kwargs)
    tokenizer.save_pretrained(path)
    mark_tokenizer_class(path / "tokenizer_config.json")
    if weights_format == "bin":
        convert_to_pytorch_bin(path)
    elif weights_format != "safetensors":
        raise ValueError(f"weights_format must be 'safetensors' or 'bin', not {weights_format!r}")
    if config_style == "hub":
        rewrite_rope_as_hub_keys(path / "config.json")
    elif config_style != "transformers":
        raise ValueError(f"config_style must be 'hub' or 'transformers', not {config_style!r}")
    return path


def convert_to_pytorch_bin(path: Path) -> None:
    """Replace the safetensors weights with one `pytorch_model.bin` holding the same tensors.

    transformers v5 only writes safetensors, so the legacy format is produced by hand.
    """
    tensors = {}
    for file in sorted(path.glob("model*.safetensors")):
        tensors.update(load_file(file))
        file.unlink()
    (path / "model.safetensors.index.json").unlink(missing_ok=True)
    torch.save(tensors, path / "pytorch_model.bin")


def rewrite_rope_as_hub_keys(config_file: Path) -> None:
    """Replace `rope_parameters` with the `rope_theta` + `rope_scaling` keys real checkpoints use."""
    config = json.loads(config_file.read_text())
    rope = dict(config.pop("rope_parameters"))
    config["rope_theta"] = rope.pop("rope_theta")
    config["rope_scaling"] = None if rope.get("rope_type", "default") == "default" else rope
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write the checkpoint into")
    parser.add_argument("--variant", choices=VARIANTS, default="gqa")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config-style", choices=("hub", "transformers"), default="hub")
    parser.add_argument("--weights-format", choices=("safetensors", "bin"), default="safetensors")
    args = parser.parse_args(argv)
    out = build_tiny_llama(
        args.out_dir,
        variant=args.variant,
        seed=args.seed,
        config_style=args.config_style,
        weights_format=args.weights_format,
    )
    print(f"wrote tiny {args.variant} Llama checkpoint to {out}")


if __name__ == "__main__":
    main()
