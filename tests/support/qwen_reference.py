"""A hand-written PyTorch Qwen (v1): modeling_qwen.py's eval forward (no flash attention) over a
converted checkpoint folder, the oracle for ``use_dynamic_ntk`` and ``use_logn_attn`` past ``seq_length``
(where HF Qwen2 computes something else, and transformers has no Qwen v1).

Qwen's NTK rule as QWenModel.forward applies it in generation: the forward without a past (the prompt)
takes ``get_ntk_alpha`` of the prompt's length and caches it (``_ntk_alpha_cached_list``); every later
forward (with a past, one generated token) reuses that cached alpha. So every token of a sequence, the
prompt's and the generated ones, is rotated with the prompt's alpha, and keys in the cache keep it.
Tokens go through the layers one at a time with a KV cache of rotated keys: under the causal mask that
computes what the prompt's one batched forward computes. logn scaling depends on the position only.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file


def get_ntk_alpha(true_seq_len: int, seq_length: int) -> int:
    """modeling_qwen.py's QWenModel.get_ntk_alpha."""
    context_value = math.log(true_seq_len / seq_length, 2) + 1
    ntk_alpha = 2 ** math.ceil(context_value) - 1
    return max(ntk_alpha, 1)


def rotary_tables(dim: int, base: float, seqlen: int, ntk_alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """modeling_qwen.py's RotaryEmbedding.update_rotary_pos_emb_cache: cos, sin [positions, dim]."""
    base = base * ntk_alpha ** (dim / (dim - 2))
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
    seq = torch.arange(max(2 * seqlen, 16))
    freqs = torch.outer(seq.type_as(inv_freq), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def logn_table(seq_length: int) -> torch.Tensor:
    """modeling_qwen.py's QWenAttention.logn_tensor (flattened)."""
    return torch.tensor([math.log(i, seq_length) if i > seq_length else 1 for i in range(1, 32768)])


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    rot_dim = cos.shape[-1]
    t_, t_pass = t[..., :rot_dim], t[..., rot_dim:]
    return torch.cat(((t_ * cos) + (rotate_half(t_) * sin), t_pass), dim=-1)


class QwenV1Reference:
    def __init__(self, folder) -> None:
        folder = Path(folder)
        self.config = cfg = json.loads((folder / "config.json").read_text())
        self.w = load_file(folder / "model.safetensors")
        self.heads, self.hidden = cfg["num_attention_heads"], cfg["hidden_size"]
        self.head_dim = cfg["kv_channels"]
        self.rot_dim = self.head_dim if cfg["rotary_pct"] == 1.0 else int(self.head_dim * cfg["rotary_pct"])
        self.seq_length, self.eps = cfg["seq_length"], cfg["layer_norm_epsilon"]
        self.logn = logn_table(self.seq_length)
        self.reset()

    def reset(self) -> None:
        self.cache: list[tuple[list, list]] = [([], []) for _ in range(self.config["num_hidden_layers"])]
        self.alpha = 1.0  # QWenModel's _ntk_alpha_cached_list, of one sequence

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.w[name]

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        bias = self.w.get(name + ".bias")
        return torch.nn.functional.linear(x, self.w[name + ".weight"], bias)

    @torch.no_grad()
    def _forward(self, token: int) -> torch.Tensor:
        """One token through every layer with the cached alpha; returns its float32 logits [vocab]."""
        kv_len = len(self.cache[0][0]) + 1
        cos, sin = rotary_tables(self.rot_dim, self.config["rotary_emb_base"], kv_len, self.alpha)
        cos, sin = cos[kv_len - 1], sin[kv_len - 1]
        h = self.w["transformer.wte.weight"][token]
        for i, (keys, values) in enumerate(self.cache):
            layer = f"transformer.h.{i}."
            q, k, v = self._linear(self._norm(h, layer + "ln_1.weight"), layer + "attn.c_attn").split(self.hidden)
            q, k, v = (t.view(self.heads, self.head_dim) for t in (q, k, v))
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            keys.append(k)
            values.append(v)
            if self.config["use_logn_attn"]:
                q = q * self.logn[kv_len - 1]
            scores = torch.einsum("hd,khd->hk", q, torch.stack(keys)) / self.head_dim ** 0.5
            attn = torch.einsum("hk,khd->hd", scores.softmax(-1), torch.stack(values)).reshape(-1)
            h = h + self._linear(attn, layer + "attn.c_proj")
            x = self._norm(h, layer + "ln_2.weight")
            a1, a2 = self._linear(x, layer + "mlp.w1"), self._linear(x, layer + "mlp.w2")
            h = h + self._linear(a1 * torch.nn.functional.silu(a2), layer + "mlp.c_proj")
        return self._linear(self._norm(h, "transformer.ln_f.weight"), "lm_head").float()

    def logits(self, prompt_ids: list[int]) -> torch.Tensor:
        """The prompt's forward (no past): logits [len(prompt_ids), vocab] of every position, all rotated
        with the alpha of the prompt's length, which is cached for the steps that follow."""
        self.reset()
        self.alpha = get_ntk_alpha(len(prompt_ids), self.seq_length) if self.config["use_dynamic_ntk"] else 1.0
        return torch.stack([self._forward(t) for t in prompt_ids])

    def step(self, token: int) -> torch.Tensor:
        """A forward with a past (a generated token): the cached alpha; returns its logits [vocab]."""
        return self._forward(token)

    def continuation_logits(self, prompt_ids: list[int], continuation: list[int]) -> torch.Tensor:
        """Logits [1 + len(continuation), vocab]: after the prompt, then after each continuation token."""
        rows = [self.logits(prompt_ids)[-1]]
        rows += [self.step(t) for t in continuation]
        return torch.stack(rows)

    def greedy(self, prompt_ids: list[int], new_tokens: int) -> list[int]:
        last = self.logits(prompt_ids)[-1]
        generated = []
        for _ in range(new_tokens):
            generated.append(int(last.argmax()))
            last = self.step(generated[-1])
        return generated
