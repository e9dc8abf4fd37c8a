"""Tiny Qwen (v1) checkpoints for tests, made from HF Qwen2 ones (transformers has no Qwen v1).

A Qwen2 model without sliding window, with untied embeddings and as many KV heads as heads computes what
Qwen v1 computes; ``convert_to_qwen_v1`` rewrites its folder in the v1 layout (config.json with model_type
"qwen" and v1 field names, ``transformer.*`` tensors, fused c_attn, the MLP as w1/w2/c_proj), so the HF
Qwen2 model on the original folder is the oracle for ours on the converted one.

``write_tiny_tiktoken`` writes a ``qwen.tiktoken`` (byte-level BPE ranks trained on the test corpus with
Qwen's split pattern) and ``tiktoken_hf_tokenizer`` turns it into an HF fast tokenizer with transformers'
own tiktoken converter: an implementation independent of the plugin's, to compare it with.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import unicodedata
from collections import Counter
from pathlib import Path

import regex
import torch
from safetensors.torch import load_file, save_file
from tokenizers import normalizers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from support.tiny_llama import CORPUS, mark_tokenizer_class, train_tokenizer
from support.tiny_models import scale_output_embeddings

# the public facts of the format, written out independently of the plugin
QWEN_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [f"<|extra_{i}|>" for i in range(205)]

QWEN2_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=4, max_position_embeddings=512, rms_norm_eps=1e-6,
                   use_sliding_window=False, tie_word_embeddings=False)


def build_tiny_qwen2(path, *, seed: int, tokenizer=None, initializer_range: float = 0.15,
                     logit_std: float = 8.0, rope_theta: float = 10000.0) -> Path:
    """An HF Qwen2 checkpoint shaped like Qwen v1 (MHA, untied, no window), loud seeded weights."""
    path = Path(path)
    tokenizer = tokenizer if tokenizer is not None else train_tokenizer(400)
    config = Qwen2Config(**QWEN2_SHAPE, vocab_size=len(tokenizer), initializer_range=initializer_range,
                         rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).to(torch.float32).eval()
    scale_output_embeddings(model, logit_std, config.hidden_size)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.eos_token_id)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    mark_tokenizer_class(path / "tokenizer_config.json")
    return path


def v1_config(qwen2: dict, *, seq_length: int, use_dynamic_ntk: bool = True, use_logn_attn: bool = True,
              rotary_pct: float = 1.0) -> dict:
    """config.json of the same model as Qwen v1 writes it (QWenConfig's field names)."""
    rope = qwen2.get("rope_parameters") or {}
    return {
        "architectures": ["QWenLMHeadModel"], "model_type": "qwen",
        "auto_map": {"AutoConfig": "configuration_qwen.QWenConfig",
                     "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"},
        "vocab_size": qwen2["vocab_size"], "hidden_size": qwen2["hidden_size"],
        "num_hidden_layers": qwen2["num_hidden_layers"], "num_attention_heads": qwen2["num_attention_heads"],
        "kv_channels": qwen2["hidden_size"] // qwen2["num_attention_heads"],
        "intermediate_size": 2 * qwen2["intermediate_size"],  # v1 counts w1 and w2 together
        "layer_norm_epsilon": qwen2["rms_norm_eps"], "rotary_pct": rotary_pct,
        "rotary_emb_base": rope.get("rope_theta", qwen2.get("rope_theta", 10000.0)),
        "seq_length": seq_length, "max_position_embeddings": qwen2["max_position_embeddings"],
        "use_dynamic_ntk": use_dynamic_ntk, "use_logn_attn": use_logn_attn, "no_bias": True,
        "scale_attn_weights": True, "tie_word_embeddings": False, "bf16": False, "fp16": False, "fp32": False,
        "use_flash_attn": "auto", "tokenizer_class": "QWenTokenizer",
        "eos_token_id": qwen2.get("eos_token_id"),
    }


def v1_tensors(qwen2: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    out = {"transformer.wte.weight": qwen2["model.embed_tokens.weight"],
           "transformer.ln_f.weight": qwen2["model.norm.weight"], "lm_head.weight": qwen2["lm_head.weight"]}
    for i in range(num_layers):
        src, dst = f"model.layers.{i}.", f"transformer.h.{i}."
        attn = [src + f"self_attn.{p}_proj." for p in "qkv"]
        out.update({
            dst + "ln_1.weight": qwen2[src + "input_layernorm.weight"],
            dst + "attn.c_attn.weight": torch.cat([qwen2[a + "weight"] for a in attn]),
            dst + "attn.c_attn.bias": torch.cat([qwen2[a + "bias"] for a in attn]),
            dst + "attn.c_proj.weight": qwen2[src + "self_attn.o_proj.weight"],
            dst + "ln_2.weight": qwen2[src + "post_attention_layernorm.weight"],
            dst + "mlp.w1.weight": qwen2[src + "mlp.up_proj.weight"],  # a1 = w1(x), multiplied
            dst + "mlp.w2.weight": qwen2[src + "mlp.gate_proj.weight"],  # silu(w2(x)): the gate
            dst + "mlp.c_proj.weight": qwen2[src + "mlp.down_proj.weight"],
        })
    return {name: tensor.contiguous() for name, tensor in out.items()}


def convert_to_qwen_v1(src, dst, **config_options) -> Path:
    """The Qwen2 folder ``src`` rewritten as a Qwen v1 folder ``dst`` (tokenizer files copied as they are)."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    qwen2 = json.loads((src / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps(v1_config(qwen2, **config_options), indent=2) + "\n")
    tensors = v1_tensors(load_file(src / "model.safetensors"), qwen2["num_hidden_layers"])
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    for extra in ("generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        if (src / extra).is_file():
            shutil.copy(src / extra, dst / extra)
    return dst


def train_bpe_ranks(text: str, merges: int) -> dict[bytes, int]:
    """Byte-level BPE ranks: the 256 bytes, then the most frequent adjacent pair, ``merges`` times."""
    ranks = {bytes([b]): b for b in range(256)}
    words = [[bytes([b]) for b in piece.encode()] for piece in regex.findall(QWEN_PATTERN, text)]
    for _ in range(merges):
        pairs = Counter(pair for word in words for pair in zip(word, word[1:]))
        if not pairs:
            break
        best = max(pairs, key=lambda pair: (pairs[pair], pair))  # ties broken by the bytes: deterministic
        ranks[best[0] + best[1]] = len(ranks)
        words = [_merge(word, best) for word in words]
    return ranks


def _merge(word: list[bytes], pair: tuple[bytes, bytes]) -> list[bytes]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


# Multi-digit tokens Qwen's pattern never lets form (it splits digits one by one): a tokenizer that splits
# like cl100k (up to 3 digits) would produce them, so a wrong pattern shows.
DIGIT_TOKENS = (b"20", b"202", b"24")


def write_tiny_tiktoken(path, merges: int = 150) -> Path:
    """``qwen.tiktoken`` in the format Qwen ships: one 'base64(token) rank' line per token."""
    path = Path(path)
    ranks = train_bpe_ranks(CORPUS, merges)
    ranks.update({token: len(ranks) + i for i, token in enumerate(DIGIT_TOKENS)})
    lines = [base64.b64encode(token) + b" " + str(rank).encode()
             for token, rank in sorted(ranks.items(), key=lambda item: item[1])]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def tiktoken_hf_tokenizer(vocab_file) -> PreTrainedTokenizerFast:
    """The same vocabulary through transformers' TikTokenConverter (HF tokenizers' BPE, not tiktoken)."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    os.environ.setdefault("TIKTOKEN_CACHE_DIR", "")  # "" turns tiktoken's by-path file cache off
    tokenizer = TikTokenConverter(vocab_file=str(vocab_file), pattern=QWEN_PATTERN,
                                  extra_special_tokens=QWEN_SPECIALS).converted()
    tokenizer.normalizer = normalizers.NFC()  # Qwen normalises text to NFC before splitting it
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                   clean_up_tokenization_spaces=False)


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)
