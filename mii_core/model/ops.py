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
``rms_norm(x, weight, eps, residual=None, amax=None)``
    ``x`` [T, H]. Without ``residual``: returns the normalised ``x`` (statistics in float32, cast back
    to ``x.dtype``, then times ``weight``: HF Llama's order). With ``residual`` [T, H]: first
    ``summed = x + residual`` (in ``x.dtype``), returns ``(norm(summed), summed)``; a fused kernel does
    both in one pass. With ``amax`` (float32 [] on x's device), also sets ``amax = max(amax, max |normed|)``
    over the normalised output as returned, as ``gated_activation`` does (the next projection's FP8 scale;
    ``joins_amax``, and the kernel set's fallback, as there). The same holds for the other two norms.
``offset_rms_norm(x, weight, eps, residual=None, amax=None)``
    As ``rms_norm``, but scaling by ``(1 + weight)`` in HF Gemma's order: the statistics, the product
    ``normed * (1 + weight)`` and ``1 + weight`` itself in float32, cast to the normed tensor's dtype only at
    the end (one rounding, where ``rms_norm`` rounds twice). A separate op, not a flag on ``rms_norm``, so
    that a kernel plugin implementing only ``rms_norm`` keeps its signature and this op falls back to the
    reference.
``layer_norm(x, weight, bias, eps, residual=None, amax=None)``
    As ``rms_norm`` with LayerNorm (``bias`` may be None).
``rotary_write_kv(q, k, v, cos, sin, rotary_dim, k_cache, v_cache, slot_mapping, kv_scales=None) -> q``
    ``q`` [T, Hq, D], ``k`` [T, Hkv, D], ``v`` [T, Hkv, Dv] (Dv may differ from D) or None; ``cos``/``sin``
    [T, rotary_dim] in q's dtype (each
    token's angles duplicated over the two halves, HF's "rotate half" layout) or None when
    ``rotary_dim`` is 0 (no rotary: learned or no positions). Rotates the first ``rotary_dim`` features
    of every head of q and k, writes k and v into ``k_cache`` [num_blocks, block_size, Hkv, D] and ``v_cache``
    [num_blocks, block_size, Hkv, Dv] at the flat slots ``slot_mapping`` [T] (block * block_size + offset),
    and returns the rotated q (a new tensor or q itself). ``q``/``k``/``v`` may be strided views of one fused
    qkv output; the caches are views of the KV cache's allocation with unit stride along the features (not
    always contiguous: ``mii_core/kv_cache/cache.py`` says which layouts a family may choose). ``v`` is None
    when the values are views of the keys' first Dv features (``value_in_key``: ``v_cache`` is such a view of
    ``k_cache``): nothing is written for them.
    An FP8 KV cache (``k_cache.dtype`` is ``torch.float8_e4m3fn``) comes with ``kv_scales``, float32
    [2, Hkv] on q's device (row 0: K's scale per KV head, row 1: V's): each written element is
    ``x · (1 / scale)`` in float32 (the reciprocal taken by ``torch.reciprocal``), clamped to ±448 and
    rounded to nearest-even e4m3. ``kv_scales`` is passed only for such a cache: a kernel that never
    stores FP8 may keep the nine-argument signature.
``paged_attention(q, k_cache, v_cache, batch, params: AttentionParams, amax=None) -> Tensor``
    ``q`` [T, Hq, D], Hq a multiple of Hkv (MHA, GQA, MQA); ``k_cache`` [num_blocks, block_size, Hkv, D],
    ``v_cache`` [num_blocks, block_size, Hkv, Dv], views with unit stride along the features, ``v_cache``
    possibly a view of ``k_cache``'s first Dv features (read in place, never copied). Every new token's K/V
    is already in the cache (``rotary_write_kv`` ran first). Returns [T, Hq, Dv]: for each token of
    sequence s at position p and head h, softmax_j(score(p, j)) v_j over the keys of sequence s at positions j with j <= p and, when
    ``params.window`` is not None, p - j < window (HF's sliding window), where
    ``score = scale · q·kᵀ``, then ``cap · tanh(score / cap)`` when ``params.logit_softcap`` is set
    (Gemma-2), then ``+ alibi_slopes[h] · (j - p)`` when ``params.alibi_slopes`` is set (Bloom, MPT;
    HF adds ``slope · j``, the same after softmax's shift invariance). Sequence s's keys are at
    ``batch.block_tables[s, j // block_size]``, offset ``j % block_size``; ``batch.context_lens[s]`` is
    its key count after this step, its new tokens are ``batch.query_start[s] : batch.query_start[s+1]``
    at positions ``context_lens[s] - query_lens[s]`` onwards. Block-table entries of blocks that left the
    window may point at blocks now used by other sequences: they must be masked, not trusted.
    With an FP8 KV cache, ``params.kv_scales`` is set (as for ``rotary_write_kv``) and the keys and values
    are ``float32(stored) · scale`` of their KV head, rounded to q's dtype; with a cache in q's dtype it
    is None (values read from their keys are then scaled by row 1, which their writer keeps equal to
    row 0: the bytes are the keys'). A kernel that stores or reads FP8 says so with a
    ``supports_fp8_kv_cache = True`` attribute (on the function, or the class it is registered as): the
    engine refuses ``kv_cache_dtype="fp8"``
    naming any chosen ``rotary_write_kv`` or ``paged_attention`` kernel without it. The value cache has unit
    stride along the features, except where both ops declare ``reads_slot_major_values = True``: the
    engine then stores an FP8 cache's values along each block's slots ([block, head, feature, slot]) behind
    the same [blocks, block_size, kv_heads, value_dim] view, and the ops read its strides.
    With ``amax`` (float32 [] on q's device), also sets ``amax = max(amax, max |output|)`` over the output as
    returned, as ``gated_activation`` does: the o projection's FP8 activation scale. A kernel that does so
    declares ``joins_amax = True`` and takes it as a sixth argument; for one that does not, the kernel set
    joins it with torch ops after the call.
``gated_activation(x, activation, amax=None) -> Tensor``
    ``x`` [T, 2F] holding [gate | up]; returns ``act(gate) * up`` [T, F]; activation "silu", "gelu" or
    "gelu_tanh". With ``amax`` (float32 [] on x's device), also sets ``amax = max(amax, max |output|)``
    over the output as returned (in x's dtype): the down projection's FP8 activation scale, joined while the
    output is written instead of read again (``quant_linear``'s ``x_amax``). A kernel that does so declares
    ``joins_amax = True``; for one that does not, the kernel set joins it with torch ops after the call.
``moe_experts(x, topk_weights, topk_ids, w_gate_up, w_down, activation) -> Tensor``
    ``x`` [T, H]; ``topk_ids`` [T, k] int64 expert of each of a token's k picks, ``topk_weights`` [T, k]
    float32 their weights; ``w_gate_up`` [E, 2F, H] ([gate | up] rows per expert), ``w_down`` [E, H, F].
    Returns sum_j topk_weights[t, j] · down_e(act(gate_e x) · up_e x) with e = topk_ids[t, j], in x's dtype.
``quant_linear(x, weight: QuantizedWeight, bias, x_amax=None) -> Tensor``
    As ``linear`` with a quantized [N, K] weight (``mii_core.model.quantization``: codes, float32 scale per
    output row, mode; or, shipped block-wise FP8, a scale per row and ``group_size`` input columns):
    ``x @ weight.dequantize().T + bias`` in x's dtype, products summed in float32. In
    mode "fp8" a step of more than ``FP8_WEIGHT_ONLY_MAX_TOKENS`` (8) tokens first takes x through a
    per-tensor e4m3 quantization (``quant_formats.fake_quantize_e4m3``: one dynamic scale, amax/448, over
    the whole step; the codes those of x times the scale's reciprocal), as the FP8 tensor-core GEMM does;
    fewer tokens, and the other modes, use x as it is.
    A device that cannot run FP8 GEMMs may keep x as it is (weight-only, more precise), saying so once in
    the log; never anything less precise. ``x_amax``, when given: float32 [], exactly max |x| over all of x
    (a producer joined it: ``gated_activation``'s ``amax``), which the op may take for its scale instead of
    reading x for it. A kernel that takes it declares ``takes_x_amax = True``; the kernel set passes it to
    no other, and a block asks for it only then (``KernelSet.takes_x_amax``).
``quant_moe_experts(x, topk_weights, topk_ids, w_gate_up: QuantizedWeight, w_down: QuantizedWeight, activation)``
    As ``moe_experts`` with the stacks quantized ([E, 2F, H] and [E, H, F], scales [E, 2F] and [E, H], or
    [E, 2F, ceil(H/g)] and [E, H, ceil(F/g)] with a ``group_size`` g); weight-only, except where
    ``w_gate_up.quantizes_activations_at(T)`` (mode "fp8", a step of more than 8 tokens), as FP8 GEMMs see
    it: x through one per-tensor e4m3 quantization as in ``quant_linear``, each pick's act(gate) · up rounded
    to x's dtype, then all the step's picks' through one more (``torch_ref.quant_linear.fp8_activation_experts``).
    A device that cannot run FP8 GEMMs may stay weight-only, as ``quant_linear``.

Fused ops: one op doing the work of several, which a kernel plugin may offer and nothing requires (no
reference registers them). The kernel set uses one only when the plugin serving it also serves every op it
stands for (``FUSED_OPS``), so a plugin replacing one of those is never bypassed by another's fusion;
otherwise, or where the fused op returns ``NotImplemented`` (a shape it has no fused path for), the kernel set
calls the ops one after the other.

``gated_linear(x, weight, bias, activation) -> Tensor``
    ``linear(gated_activation(x, activation), weight, bias)``: ``x`` [T, 2F] holding [gate | up], ``weight``
    [N, F]. The activation's values are rounded as ``gated_activation`` rounds them, so the result is the two
    ops'. A GEMV computes act(gate) · up as it reads x: a decode step writes and reads no [T, F] tensor and
    launches one kernel fewer a layer.
``gated_quant_linear(x, weight: QuantizedWeight, bias, activation) -> Tensor``
    The same with ``quant_linear``.
``rms_norm_linear(x, residual, norm_weight, eps, weight, bias) -> (Tensor, Tensor)``
    ``(linear(normed, weight, bias), summed)`` for ``normed, summed = rms_norm(x, norm_weight, eps, residual)``
    (``summed`` is x itself where ``residual`` is None). The normalised values are rounded as ``rms_norm``
    rounds them; the statistics may be summed in another order (float32), so a value may land one rounding
    step apart. A GEMV normalises x as it reads it: a decode step writes and reads no normalised tensor and
    launches one kernel fewer a norm (two a layer).
``rms_norm_quant_linear(x, residual, norm_weight, eps, weight: QuantizedWeight, bias) -> (Tensor, Tensor)``
    The same with ``quant_linear``. Unlike the gated ops, the kernel set does not compose these two itself
    where a fused op returns ``NotImplemented``: the norm's block does (``model/deferred_norm.py``), since only
    it hands the norm's absmax on to the linear.

What blocks do with torch directly, and why not through an op: embedding lookups (a gather, no
arithmetic worth a kernel: ``parallel.py``), the collectives of tensor parallelism (``ParallelContext``),
the element-wise activation of a plain (non-gated) MLP (``mlp.py``: fused by nothing, read once), and the
router's softmax + top-k of a mixture of experts (``moe.py``: [T, E] values, a few microseconds). Every
matrix product, norm, rotation, attention and expert product goes through an op.

A plugin may add an op of its own: register it under a new name with the same ``registry.register``
call; its blocks get it with ``kernels.op("my_op")`` (resolved on first use, then cached).

A registration's target is a function, or a class: a class is instantiated once per :class:`KernelSet`
(with no arguments) and the instance is the op. That is where a kernel keeps its launch settings
(tile sizes, split counts): read when the kernel set first resolves the op (from the environment, say),
held by the instance, never by a module global.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

if TYPE_CHECKING:  # torch only for the annotations: importing this module must stay cheap
    import torch

    from mii_core.batch import RaggedBatch
    from mii_core.model.quantization import QuantizedWeight

# the ops every built-in block uses; listed by `mii-core plugins`
OP_NAMES = ("rms_norm", "offset_rms_norm", "layer_norm", "rotary_write_kv", "paged_attention", "gated_activation",
            "moe_experts", "linear", "quant_linear", "quant_moe_experts")
# the fused ops (contracts above): each with the ops it does the work of
FUSED_OPS = {"gated_linear": ("gated_activation", "linear"),
             "gated_quant_linear": ("gated_activation", "quant_linear"),
             "rms_norm_linear": ("rms_norm", "linear"),
             "rms_norm_quant_linear": ("rms_norm", "quant_linear")}


@dataclass(frozen=True)
class AttentionParams:
    """What one attention layer asks of ``paged_attention`` beyond its tensors (contract above).

    ``scale``: multiplies q·kᵀ. ``window``: the sliding window in tokens, or None. ``alibi_slopes``: a
    float32 [Hq_local] tensor on q's device (each rank of a tensor-parallel model holds its own heads'
    slopes), or None. ``logit_softcap``: Gemma-2's cap, or None. ``kv_scales``: with an FP8 KV cache,
    float32 [2, Hkv_local] on q's device, the K (row 0) and V (row 1) scale of each local KV head (chosen
    in ``mii_core/kv_cache/fp8.py``), or None with a cache in q's dtype. A new attention option joins this
    dataclass with a default that keeps the old behaviour, so the op's signature never changes; a kernel
    that cannot honour a set field must raise, naming it.
    """

    scale: float
    window: Optional[int] = None
    alibi_slopes: Optional["torch.Tensor"] = None
    logit_softcap: Optional[float] = None
    kv_scales: Optional["torch.Tensor"] = None

    def __post_init__(self) -> None:
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be None or a positive token count, not {self.window}")
        if self.logit_softcap is not None and not self.logit_softcap > 0:
            raise ValueError(f"logit_softcap must be None or positive, not {self.logit_softcap}")
        if self.alibi_slopes is not None and self.alibi_slopes.dim() != 1:
            raise ValueError(f"alibi_slopes must be one slope per local query head [Hq], "
                             f"got shape {tuple(self.alibi_slopes.shape)}")
        if self.kv_scales is not None and (self.kv_scales.dim() != 2 or self.kv_scales.shape[0] != 2):
            raise ValueError(f"kv_scales must be the K and V scales of each local KV head [2, Hkv], "
                             f"got shape {tuple(self.kv_scales.shape)}")


class KernelOps(Protocol):
    """The ``kernels`` argument every block takes: the built-in ops (contracts above), and ``op`` for a
    plugin's own."""

    def linear(self, x: "torch.Tensor", weight: "torch.Tensor",
               bias: Optional["torch.Tensor"]) -> "torch.Tensor": ...

    def rms_norm(self, x: "torch.Tensor", weight: "torch.Tensor", eps: float,
                 residual: Optional["torch.Tensor"] = None, amax: Optional["torch.Tensor"] = None) -> Any: ...

    def offset_rms_norm(self, x: "torch.Tensor", weight: "torch.Tensor", eps: float,
                        residual: Optional["torch.Tensor"] = None, amax: Optional["torch.Tensor"] = None) -> Any: ...

    def layer_norm(self, x: "torch.Tensor", weight: "torch.Tensor", bias: Optional["torch.Tensor"], eps: float,
                   residual: Optional["torch.Tensor"] = None, amax: Optional["torch.Tensor"] = None) -> Any: ...

    def rotary_write_kv(self, q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor",
                        cos: Optional["torch.Tensor"], sin: Optional["torch.Tensor"], rotary_dim: int,
                        k_cache: "torch.Tensor", v_cache: "torch.Tensor", slot_mapping: "torch.Tensor",
                        kv_scales: Optional["torch.Tensor"] = None) -> "torch.Tensor": ...

    def paged_attention(self, q: "torch.Tensor", k_cache: "torch.Tensor", v_cache: "torch.Tensor",
                        batch: "RaggedBatch", params: AttentionParams,
                        amax: Optional["torch.Tensor"] = None) -> "torch.Tensor": ...

    def gated_activation(self, x: "torch.Tensor", activation: str,
                         amax: Optional["torch.Tensor"] = None) -> "torch.Tensor": ...

    def moe_experts(self, x: "torch.Tensor", topk_weights: "torch.Tensor", topk_ids: "torch.Tensor",
                    w_gate_up: "torch.Tensor", w_down: "torch.Tensor", activation: str) -> "torch.Tensor": ...

    def quant_linear(self, x: "torch.Tensor", weight: "QuantizedWeight", bias: Optional["torch.Tensor"],
                     x_amax: Optional["torch.Tensor"] = None) -> "torch.Tensor": ...

    def takes_x_amax(self) -> bool: ...

    def gated_linear(self, x: "torch.Tensor", weight: "torch.Tensor", bias: Optional["torch.Tensor"],
                     activation: str) -> "torch.Tensor": ...

    def gated_quant_linear(self, x: "torch.Tensor", weight: "QuantizedWeight", bias: Optional["torch.Tensor"],
                           activation: str) -> "torch.Tensor": ...

    def quant_moe_experts(self, x: "torch.Tensor", topk_weights: "torch.Tensor", topk_ids: "torch.Tensor",
                          w_gate_up: "QuantizedWeight", w_down: "QuantizedWeight",
                          activation: str) -> "torch.Tensor": ...

    def folds_rms_norm(self, quantized: bool) -> bool: ...

    def rms_norm_linear(self, x: "torch.Tensor", residual: Optional["torch.Tensor"], norm_weight: "torch.Tensor",
                        eps: float, weight: "torch.Tensor", bias: Optional["torch.Tensor"]) -> Any: ...

    def rms_norm_quant_linear(self, x: "torch.Tensor", residual: Optional["torch.Tensor"],
                              norm_weight: "torch.Tensor", eps: float, weight: "QuantizedWeight",
                              bias: Optional["torch.Tensor"]) -> Any: ...

    def op(self, name: str) -> Callable[..., Any]: ...


class KernelSet:
    """The implementation of each op for one device (implements :class:`KernelOps`), each resolved on
    first use and then cached."""

    def __init__(self, device_type: str, registry: Any) -> None:
        self.device_type = device_type
        self._registry = registry
        self._impls: dict[str, Callable[..., Any]] = {}
        self._fused: dict[str, Optional[Callable[..., Any]]] = {}

    @property
    def choices(self) -> dict[str, Any]:
        """op -> the registration chosen for this device (for listing; imports nothing)."""
        return {op: self._registry.choose(op, self.device_type) for op in OP_NAMES}

    def op(self, name: str) -> Callable[..., Any]:
        """The implementation of op ``name`` (a built-in one or a plugin's own) for this device."""
        if name not in self._impls:
            target = self._registry.resolve(name, self.device_type)
            self._impls[name] = target() if isinstance(target, type) else target
        return self._impls[name]

    def linear(self, x, weight, bias):
        return self.op("linear")(x, weight, bias)

    def rms_norm(self, x, weight, eps, residual=None, amax=None):
        return self._norm("rms_norm", (x, weight, eps, residual), amax)

    def offset_rms_norm(self, x, weight, eps, residual=None, amax=None):
        return self._norm("offset_rms_norm", (x, weight, eps, residual), amax)

    def layer_norm(self, x, weight, bias, eps, residual=None, amax=None):
        return self._norm("layer_norm", (x, weight, bias, eps, residual), amax)

    def _norm(self, name: str, args: tuple, amax):
        """A norm op; with ``amax``, max |normed| joined into it by the kernel (``joins_amax``) or after it."""
        op = self.op(name)
        if amax is None:
            return op(*args)
        if getattr(op, "joins_amax", False):
            return op(*args, amax)
        out = op(*args)
        join_amax(amax, out if args[-1] is None else out[0])
        return out

    def rotary_write_kv(self, q, k, v, cos, sin, rotary_dim, k_cache, v_cache, slot_mapping, kv_scales=None):
        args = (q, k, v, cos, sin, rotary_dim, k_cache, v_cache, slot_mapping)
        # scales only for an FP8 cache: a kernel that never stores FP8 keeps the nine-argument signature
        return self.op("rotary_write_kv")(*args) if kv_scales is None else self.op("rotary_write_kv")(*args, kv_scales)

    def supports_fp8_kv_cache(self, op: str) -> bool:
        """Whether the kernel chosen for ``op`` declares it stores or reads an FP8 KV cache."""
        return bool(getattr(self.op(op), "supports_fp8_kv_cache", False))

    def reads_slot_major_values(self) -> bool:
        """Whether the kernels chosen for the cache's writer and reader both declare they take a value cache
        stored along its slots (``reads_slot_major_values``; the contract of ``paged_attention``)."""
        return all(getattr(self.op(op), "reads_slot_major_values", False)
                   for op in ("rotary_write_kv", "paged_attention"))

    def paged_attention(self, q, k_cache, v_cache, batch, params: AttentionParams, amax=None):
        return self._joining(self.op("paged_attention"), amax, q, k_cache, v_cache, batch, params)

    def gated_activation(self, x, activation, amax=None):
        return self._joining(self.op("gated_activation"), amax, x, activation)

    @staticmethod
    def _joining(op, amax, *args):
        """``op(*args)``, joining max |output| into ``amax`` where one is given: by the kernel where it declares
        ``joins_amax`` (``amax`` its last argument), else by one more pass over its output."""
        if amax is None:
            return op(*args)
        if getattr(op, "joins_amax", False):
            return op(*args, amax)
        return join_amax(amax, op(*args))

    def moe_experts(self, x, topk_weights, topk_ids, w_gate_up, w_down, activation):
        return self.op("moe_experts")(x, topk_weights, topk_ids, w_gate_up, w_down, activation)

    def quant_linear(self, x, weight, bias, x_amax=None):
        if x_amax is None or not self.takes_x_amax():
            return self.op("quant_linear")(x, weight, bias)
        return self.op("quant_linear")(x, weight, bias, x_amax)

    def fused(self, name: str) -> Optional[Callable[..., Any]]:
        """The fused op ``name`` (``FUSED_OPS``) where one plugin serves it and every op it stands for on this
        device; None otherwise (the ops are then called one after the other)."""
        if name not in self._fused:
            impl = None
            if self._registry.candidates(name, self.device_type):
                plugin = self._registry.choose(name, self.device_type).plugin
                if all(self._registry.choose(op, self.device_type).plugin == plugin for op in FUSED_OPS[name]):
                    impl = self.op(name)
            self._fused[name] = impl
        return self._fused[name]

    def gated_linear(self, x, weight, bias, activation):
        fused = self.fused("gated_linear")
        out = fused(x, weight, bias, activation) if fused is not None else NotImplemented
        return self.linear(self.gated_activation(x, activation), weight, bias) if out is NotImplemented else out

    def gated_quant_linear(self, x, weight, bias, activation):
        fused = self.fused("gated_quant_linear")
        out = fused(x, weight, bias, activation) if fused is not None else NotImplemented
        if out is NotImplemented:
            return self.quant_linear(self.gated_activation(x, activation), weight, bias)
        return out

    def folds_rms_norm(self, quantized: bool) -> bool:
        """Whether a fused op multiplies a linear of this kind (``quant_linear`` where ``quantized``) by the
        ``rms_norm`` of its input (``rms_norm_quant_linear`` / ``rms_norm_linear``)."""
        return self.fused("rms_norm_quant_linear" if quantized else "rms_norm_linear") is not None

    def rms_norm_linear(self, x, residual, norm_weight, eps, weight, bias):
        """``(linear(rms_norm(x, ...)), summed)`` through the fused op; ``NotImplemented`` where there is none
        or it has no path for these shapes: the caller then runs the norm and the linear itself."""
        fused = self.fused("rms_norm_linear")
        return NotImplemented if fused is None else fused(x, residual, norm_weight, eps, weight, bias)

    def rms_norm_quant_linear(self, x, residual, norm_weight, eps, weight, bias):
        """As ``rms_norm_linear`` with ``quant_linear``."""
        fused = self.fused("rms_norm_quant_linear")
        return NotImplemented if fused is None else fused(x, residual, norm_weight, eps, weight, bias)

    def takes_x_amax(self) -> bool:
        """Whether the chosen ``quant_linear`` takes a producer's max |x| (``x_amax``): worth joining only then."""
        return bool(getattr(self.op("quant_linear"), "takes_x_amax", False))

    def quant_moe_experts(self, x, topk_weights, topk_ids, w_gate_up, w_down, activation):
        return self.op("quant_moe_experts")(x, topk_weights, topk_ids, w_gate_up, w_down, activation)


def join_amax(amax: "torch.Tensor", out: "torch.Tensor") -> "torch.Tensor":
    """``amax = max(amax, max |out|)`` in place (float32), then ``out``: the reference ops' join, and the kernel
    set's after an ``amax`` op whose kernel lacks ``joins_amax``."""
    if out.numel():
        amax.copy_(amax.maximum(out.detach().abs().amax().float()))
    return out
