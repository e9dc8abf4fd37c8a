"""The ops a model calls through the kernel registry, and their contracts.

This is the boundary between model blocks (``mii_core/model/``) and kernels (``kernels/``): a block
only ever calls ``kernels.<op>(...)``; a kernel only ever sees tensors and the step's
:class:`~mii_core.batch.RaggedBatch`. The PyTorch reference of every op lives in the ``mii-kernels``
distribution (``mii_kernels.torch_ref``, priority 0). A faster implementation (Triton, CUDA) registers
the same name with a higher priority for its devices and must honour the same contract; it must not
synchronise with the host (no ``.item()``, no data-dependent shapes) so that decode steps can be
captured in a CUDA graph. ``T`` is the step's token count, ``S`` its sequence count.

``linear(x, weight, bias) -> Tensor``
    ``x`` [T, K] (may be a strided view, unit stride along K), ``weight`` [N, K] contiguous, ``bias`` [N]
    or None. Returns ``x @ weight.T + bias`` [T, N] in x's dtype, products summed in float32 and rounded
    once (as cuBLAS does). Every projection of a block goes through it: at batch 1 a decode step is a
    chain of these, bound by how fast the weights are read.
``rms_norm(x, weight, eps, residual=None)``
    ``x`` [T, H]. Without ``residual``: returns the normalised ``x`` (statistics in float32, cast back
    to ``x.dtype``, then times ``weight``: HF Llama's order). With ``residual`` [T, H]: first
    ``summed = x + residual`` (in ``x.dtype``), returns ``(norm(summed), summed)``; a fused kernel does
    both in one pass.
``layer_norm(x, weight, bias, eps, residual=None)``
    As ``rms_norm`` with LayerNorm (``bias`` may be None).
``rotary_write_kv(q, k, v, cos, sin, rotary_dim, k_cache, v_cache, slot_mapping) -> q``
    ``q`` [T, Hq, D], ``k``/``v`` [T, Hkv, D]; ``cos``/``sin`` [T, rotary_dim] in q's dtype (each
    token's angles duplicated over the two halves, HF's "rotate half" layout) or None when
    ``rotary_dim`` is 0 (no rotary: learned or no positions). Rotates the first ``rotary_dim`` features
    of every head of q and k, writes k and v into ``k_cache``/``v_cache`` [num_blocks, block_size, Hkv, D]
    at the flat slots ``slot_mapping`` [T] (block * block_size + offset), and returns the rotated q
    (a new tensor or q itself). ``q``/``k``/``v`` may be strided views of one fused qkv output.
``paged_attention(q, k_cache, v_cache, batch, scale, window) -> Tensor``
    ``q`` [T, Hq, D], Hq a multiple of Hkv (MHA, GQA, MQA). Every new token's K/V is already in the cache
    (``rotary_write_kv`` ran first). Returns [T, Hq, D]: for each token of sequence s at position p,
    softmax(scale · q·kᵀ) v over the keys of sequence s at positions j with j <= p and, when ``window``
    is not None, p - j < window (HF's sliding window). Sequence s's keys are at
    ``batch.block_tables[s, j // block_size]``, offset ``j % block_size``; ``batch.context_lens[s]`` is
    its key count after this step, its new tokens are ``batch.query_start[s] : batch.query_start[s+1]``
    at positions ``context_lens[s] - query_lens[s]`` onwards. Block-table entries of blocks that left the
    window may point at blocks now used by other sequences: they must be masked, not trusted.
``gated_activation(x, activation) -> Tensor``
    ``x`` [T, 2F] holding [gate | up]; returns ``act(gate) * up`` [T, F]; activation "silu", "gelu" or
    "gelu_tanh".
``moe_experts(x, topk_weights, topk_ids, w_gate_up, w_down, activation) -> Tensor``
    ``x`` [T, H]; ``topk_ids`` [T, k] int64 expert of each of a token's k picks, ``topk_weights`` [T, k]
    float32 their weights; ``w_gate_up`` [E, 2F, H] ([gate | up] rows per expert), ``w_down`` [E, H, F].
    Returns sum_j topk_weights[t, j] · down_e(act(gate_e x) · up_e x) with e = topk_ids[t, j], in x's dtype.

A plugin may add an op of its own: register it under a new name with the same ``registry.register``
call; ``KernelSet`` resolves any name on first use, so ``kernels.my_op(...)`` works in its blocks.
"""
from __future__ import annotations

from typing import Any, Callable

# the ops every built-in block uses; listed by `mii-core plugins`
OP_NAMES = ("rms_norm", "layer_norm", "rotary_write_kv", "paged_attention", "gated_activation", "moe_experts",
            "linear")


class KernelSet:
    """The implementation of each op for one device, resolved on first use and then cached."""

    def __init__(self, device_type: str, registry: Any) -> None:
        self.device_type = device_type
        self._registry = registry
        self._impls: dict[str, Callable[..., Any]] = {}

    @property
    def choices(self) -> dict[str, Any]:
        """op -> the registration chosen for this device (for listing; imports nothing)."""
        return {op: self._registry.choose(op, self.device_type) for op in OP_NAMES}

    def __getattr__(self, op: str) -> Callable[..., Any]:
        if op.startswith("_"):
            raise AttributeError(op)
        impls = self.__dict__["_impls"]
        if op not in impls:
            impls[op] = self._registry.resolve(op, self.device_type)
        return impls[op]
