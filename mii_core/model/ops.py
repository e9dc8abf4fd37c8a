"""The ops a model calls through the kernel registry, and their contracts.

Each op is looked up by name for the model's device (``KernelRegistry.resolve``); the PyTorch
reference for every op lives in the ``mii-kernels`` distribution. A faster implementation (Triton,
CUDA) registers the same name with a higher priority and must honour the same contract.

``rms_norm(x, weight, eps) -> Tensor``
    ``x`` [T, H]. Normalise in float32, cast back to ``x.dtype``, then multiply by ``weight``
    (HF Llama order).
``layer_norm(x, weight, bias, eps) -> Tensor``
    ``x`` [T, H]; ``bias`` may be None.
``rotary_embedding(q, k, cos, sin, rotary_dim) -> (q, k)``
    ``q`` [T, Hq, D], ``k`` [T, Hkv, D], ``cos``/``sin`` [T, rotary_dim] in q's dtype (each token's
    angles, duplicated over the two halves). Rotates the first ``rotary_dim`` features of each head,
    "rotate half" layout (HF).
``gated_activation(x, activation) -> Tensor``
    ``x`` [T, 2F] holding [gate | up]; returns ``act(gate) * up`` [T, F]; activation "silu" or "gelu".
``blocked_attention(q, k, v, k_cache, v_cache, batch, scale) -> Tensor``
    ``q`` [T, Hq, D], ``k``/``v`` [T, Hkv, D] for the batch's new tokens; ``k_cache``/``v_cache``
    [num_blocks, block_size, Hkv, D]. Writes k/v into the cache at ``batch.slot_mapping``, then returns
    causal attention [T, Hq, D] of each new token over its own sequence's cached tokens
    (``batch.context_lens``, ``batch.block_tables``). Hq must be a multiple of Hkv (GQA).
"""
from __future__ import annotations

from typing import Any, Callable

OP_NAMES = ("rms_norm", "layer_norm", "rotary_embedding", "gated_activation", "blocked_attention")


class KernelSet:
    """The implementation of every op for one device, resolved once when a model is built."""

    def __init__(self, device_type: str, registry: Any) -> None:
        self.device_type = device_type
        self.choices = {op: registry.choose(op, device_type) for op in OP_NAMES}
        self._impls: dict[str, Callable[..., Any]] = {op: registry.resolve(op, device_type) for op in OP_NAMES}

    def __getattr__(self, op: str) -> Callable[..., Any]:
        try:
            return self.__dict__["_impls"][op]
        except KeyError:
            raise AttributeError(op) from None
