"""Honest floors: the least time a workload can take on the measured ceilings, by compute and by memory.

Pure arithmetic (no torch), so it is tested on the CPU against hand-worked cases (tests/test_bench_floors.py).

The schedule assumed is the one with the fewest steps the workload allows: every request is in flight from
the first step, all prompts are prefilled in that step (a shared prefix once), and request i then needs
``out_i - 1`` decode steps, so the workload takes ``max(out)`` steps.

- compute bound: 2 x (matmul params a token passes) per processed token, the LM head only for tokens whose
  logits are sampled (one per output token), plus causal attention (4 x layers x heads x head_dim per key);
  over the measured matmul rate.
- memory bound: the streamed weights read once per step (an MoE step reads only the experts its tokens
  reach, ``Geometry.experts_reached``), plus every KV byte each decode step must read (a shared prefix once
  per step; a sliding-window layer only its window); over the measured read bandwidth. KV writes,
  activations and the embedding gather are left out: this stays a lower bound.

The larger of the two is the floor a figure is held against.

Quantized weights (``quantization_mode``): the matmul weights (dense and experts) are read at the mode's
bytes per weight (``MODE_WEIGHT_BYTES``; the per-row float32 scales, 4 bytes per row, are left out), and so is
the LM head where it is not tied to the embedding (the engine quantizes such a head too), while a tied head and
the KV cache keep the model's dtype; "fp8"'s FP8 tensor cores are taken at twice the
measured 16-bit matmul rate (``MODE_FLOPS_FACTOR``: Hopper's and Ada's peak ratio, not measured here).
"""
from dataclasses import dataclass, replace

MODE_WEIGHT_BYTES = {"fp8": 1.0, "wf8af16": 1.0, "wf6af16": 0.75}
MODE_FLOPS_FACTOR = {"fp8": 2.0}


@dataclass(frozen=True)
class Geometry:
    """What the floors need to know about a model; ``from_config`` reads it from a config.json dict."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    dense_params: int  # matmul params every token passes, all layers (attention, dense MLP, router)
    head_params: int  # LM head (vocab x hidden), run only for sampled positions
    dtype_bytes: int
    expert_params: int = 0  # all experts of all layers
    experts: int = 1
    top_k: int = 1
    sliding_window: int = 0  # 0: full attention
    sliding_layers: int | None = None  # layers that use the window (Gemma-2: every other); None: all of them
    weight_bytes: float = 0  # bytes per dense/expert matmul weight; 0: dtype_bytes (a quantized mode sets it)
    kv_dtype_bytes: int = 0  # bytes per K/V element in the cache; 0: dtype_bytes (1 for an FP8 KV cache)
    head_tied: bool = False  # the LM head is the embedding's table (then never quantized)

    @classmethod
    def from_config(cls, cfg, dtype_bytes):
        """Llama-like configs, Mixtral's and Qwen-MoE's experts (dense layers among sparse ones, a shared
        expert), Gemma-2's per-layer windows (``layer_types``)."""
        h, layers, heads = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
        kv_heads = cfg.get("num_key_value_heads") or heads
        hd = cfg.get("head_dim") or h // heads
        attn = h * heads * hd * 2 + h * kv_heads * hd * 2  # q and o, k and v
        experts = cfg.get("num_local_experts") or cfg.get("num_experts") or 1
        sparse = _sparse_layers(cfg, layers) if experts > 1 else 0
        expert_mlp = 3 * h * (cfg.get("moe_intermediate_size") or cfg["intermediate_size"])
        shared = cfg.get("shared_expert_intermediate_size") or 0  # every token passes it, and its 1-wide gate
        sparse_dense = h * experts + (3 * h * shared + h if shared else 0)  # router (+ shared expert)
        dense_mlp = 3 * h * cfg["intermediate_size"]  # gate, up, down
        window, windowed = _windows(cfg, layers)
        return cls(layers=layers, heads=heads, kv_heads=kv_heads, head_dim=hd,
                   dense_params=layers * attn + sparse * sparse_dense + (layers - sparse) * dense_mlp,
                   head_params=cfg["vocab_size"] * h, dtype_bytes=dtype_bytes,
                   expert_params=sparse * experts * expert_mlp, experts=experts if sparse else 1,
                   top_k=(cfg.get("num_experts_per_tok") or 1) if sparse else 1,
                   sliding_window=window, sliding_layers=windowed,
                   head_tied=cfg.get("tie_word_embeddings", True))  # transformers' default where unsaid

    def quantized(self, mode):
        """This geometry with its matmul weights in quantization mode ``mode`` (None: unchanged)."""
        return self if mode is None else replace(self, weight_bytes=MODE_WEIGHT_BYTES[mode])

    @property
    def matmul_weight_bytes(self):
        return self.weight_bytes or self.dtype_bytes

    @property
    def head_bytes(self):
        """Bytes the LM head's weights take: a quantized mode's where the head is its own, else the dtype's."""
        return self.dtype_bytes if self.head_tied else self.matmul_weight_bytes

    @property
    def kv_bytes_per_token(self):
        return self.layers * self.kv_bytes_per_layer_token

    @property
    def kv_bytes_per_layer_token(self):
        return 2 * self.kv_heads * self.head_dim * (self.kv_dtype_bytes or self.dtype_bytes)

    def layer_windows(self):
        """((layers, window), ...): how many layers attend each way; window 0 is full attention."""
        windowed = self.layers if self.sliding_layers is None else self.sliding_layers
        windowed = windowed if self.sliding_window else 0
        return tuple((n, w) for n, w in ((self.layers - windowed, 0), (windowed, self.sliding_window)) if n)

    @property
    def streamed_weight_bytes(self):
        """Weights a step touching every expert reads: every matmul weight (the embedding is only gathered)."""
        return (self.dense_params + self.expert_params) * self.matmul_weight_bytes + self.head_params * self.head_bytes

    def active_params(self):
        """Matmul params one token passes, LM head excluded."""
        return self.dense_params + self.expert_params * self.top_k / self.experts

    def experts_reached(self, tokens):
        """Experts per MoE layer a step of `tokens` tokens reads, each token routed to top_k of them.

        Anything from top_k (every token picks the same experts) to min(experts, tokens x top_k) (no two
        tokens share one) is possible; which one depends on the router. We take a balanced router's
        expectation: a token misses a given expert with probability 1 - top_k / experts, so with tokens
        routed independently an expert is left unread with probability (1 - top_k / experts) ** tokens and
        E x (1 - (1 - k/E) ** n) experts are read. A random-weight router is close to balanced (gpu_parity
        checks that Mixtral's spreads tokens over at least half the experts), and the upper end would overstate
        the floor of a small batch (Qwen3-MoE, 128 experts, top-8: 16 tokens reach 82 experts on average,
        not 128). From about 5 x experts / top_k tokens on, nearly every expert is read either way."""
        if not self.expert_params:
            return 0.0
        return self.experts * (1.0 - (1.0 - self.top_k / self.experts) ** tokens)

    def step_weight_bytes(self, tokens):
        """Weights one step with `tokens` tokens must read: the dense ones, the LM head, the experts reached."""
        reach = self.experts_reached(tokens) / self.experts if self.expert_params else 0.0
        return (self.dense_params + self.expert_params * reach) * self.matmul_weight_bytes \
            + self.head_params * self.head_bytes

    def attention_flops(self, keys, layers=None):
        """QK^T and PV for `keys` (query, key) pairs in each of `layers` layers (default all)."""
        return 4 * (self.layers if layers is None else layers) * self.heads * self.head_dim * keys


def keys_attended(first_pos, end_pos, window=0):
    """Sum over token positions first_pos..end_pos-1 of the keys each attends (itself included), causal;
    with a sliding window, at most `window` each."""
    def upto(n):  # sum_{k=1..n} min(k, window)
        if n <= 0:
            return 0
        if not window or n <= window:
            return n * (n + 1) // 2
        return window * (window + 1) // 2 + (n - window) * window
    return upto(end_pos) - upto(first_pos)


def workload_floor(geo, prompt_lens, output_lens, matmul_flops, read_Bps, shared_prefix_len=0):
    """Compute and memory bounds (seconds) of one workload under the fewest-steps schedule (module doc)."""
    assert len(prompt_lens) == len(output_lens) > 0
    assert all(p > shared_prefix_len for p in prompt_lens) and all(o >= 1 for o in output_lens)
    P, groups = shared_prefix_len, geo.layer_windows()  # each group of layers attends with its own window
    prefill_tokens = P + sum(p - P for p in prompt_lens)
    decode_tokens = sum(o - 1 for o in output_lens)
    prefill_attn = decode_attn = 0
    for n, w in groups:
        prefill_keys = keys_attended(0, P, w) + sum(keys_attended(P, p, w) for p in prompt_lens)
        decode_keys = sum(keys_attended(p, p + o - 1, w) for p, o in zip(prompt_lens, output_lens))
        prefill_attn += geo.attention_flops(prefill_keys, n)
        decode_attn += geo.attention_flops(decode_keys, n)
    active = geo.active_params()
    prefill_flops = 2 * active * prefill_tokens + 2 * geo.head_params * len(prompt_lens) + prefill_attn
    decode_flops = (2 * active + 2 * geo.head_params) * decode_tokens + decode_attn

    steps = max(output_lens)
    prefill_bytes = geo.step_weight_bytes(prefill_tokens)
    decode_weight_bytes = decode_kv_bytes = 0
    for j in range(1, steps):  # decode step j: request i is in it while j <= out_i - 1
        live = [p for p, o in zip(prompt_lens, output_lens) if o - 1 >= j]
        decode_weight_bytes += geo.step_weight_bytes(len(live))
        layer_tokens = sum(n * decode_kv_tokens(live, j, P, w) for n, w in groups)  # KV entries over all layers
        decode_kv_bytes += layer_tokens * geo.kv_bytes_per_layer_token
    peak_kv_tokens = P + sum(p - P + o - 1 for p, o in zip(prompt_lens, output_lens))

    out = {
        "steps": steps, "decode_steps": steps - 1,
        "prefill_tokens": prefill_tokens, "decode_tokens": decode_tokens,
        "flops": prefill_flops + decode_flops, "attention_flops": prefill_attn + decode_attn,
        "weight_bytes_read": prefill_bytes + decode_weight_bytes, "kv_bytes_read": decode_kv_bytes,
        "kv_bytes_peak": peak_kv_tokens * geo.kv_bytes_per_token,
        "compute_s": (prefill_flops + decode_flops) / matmul_flops,
        "memory_s": (prefill_bytes + decode_weight_bytes + decode_kv_bytes) / read_Bps,
    }
    if steps > 1:  # one decode step on average: the W2 form
        out["decode_step_compute_s"] = decode_flops / matmul_flops / (steps - 1)
        out["decode_step_memory_s"] = (decode_weight_bytes + decode_kv_bytes) / read_Bps / (steps - 1)
        out["decode_step_s"] = max(out["decode_step_compute_s"], out["decode_step_memory_s"])
    out["floor_s"] = max(out["compute_s"], out["memory_s"])
    out["bound"] = "compute" if out["compute_s"] >= out["memory_s"] else "memory"
    out["output_tokens_per_s"] = sum(output_lens) / out["floor_s"]
    out["prompt_tokens_per_s"] = sum(prompt_lens) / out["floor_s"]
    return out


def decode_kv_tokens(prompt_lens, j, shared_prefix_len=0, window=0):
    """KV entries decode step j must read: each request's keys (``p + j`` of them, at most `window`), the
    shared prefix's once however many requests see it."""
    shared = own = 0
    for p in prompt_lens:
        n = p + j
        first = max(0, n - window) if window else 0  # first position in view
        in_prefix = max(0, shared_prefix_len - first)
        shared = max(shared, in_prefix)
        own += n - first - in_prefix
    return shared + own


def _sparse_layers(cfg, layers):
    """How many layers hold experts: Qwen-MoE's dense ``mlp_only_layers`` and ``decoder_sparse_step`` grid
    (layer i is sparse when (i + 1) % step == 0), Mixtral's every layer."""
    dense, step = set(cfg.get("mlp_only_layers") or ()), cfg.get("decoder_sparse_step") or 1
    return sum(1 for i in range(layers) if i not in dense and (i + 1) % step == 0)


def _windows(cfg, layers):
    """(window, layers using it): ``layer_types`` where the config has them (Gemma-2), none when
    ``use_sliding_window`` is off (Qwen's configs keep a window size they do not use), else the window
    on every layer (Mistral)."""
    window = cfg.get("sliding_window") or 0
    if not window or cfg.get("use_sliding_window") is False:
        return 0, None
    types = cfg.get("layer_types")
    if types is None:
        return window, None
    return window, sum(1 for t in types if t == "sliding_attention")
