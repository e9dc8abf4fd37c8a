"""What the engine's MoE router picked: recorded around a call, then summarised per layer. Shared by
tests/test_arch_mixtral.py and benchmarks/gpu_parity.py."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def recording_routing():
    """Yields a list that fills with (weights, expert ids) of every routing call in eager forward passes
    (a replayed CUDA graph calls no Python; the calls made while capturing one are left out)."""
    import mii_core.model.moe as moe

    calls, gating = [], moe.top_k_gating

    def recording(router_logits, k, renormalize):
        weights, ids = gating(router_logits, k, renormalize)
        if not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()):
            calls.append((weights.detach().cpu(), ids.cpu()))
        return weights, ids

    moe.top_k_gating = recording
    try:
        yield calls
    finally:
        moe.top_k_gating = gating


def expert_spread(calls, layers: int, experts: int) -> tuple[list[int], float]:
    """Per layer how many experts got a token, and the largest share of one layer's picks one expert took
    (calls come layer by layer in each forward pass)."""
    assert calls and len(calls) % layers == 0, f"{len(calls)} routing calls for {layers} layers"
    counts = [torch.bincount(torch.cat([ids.reshape(-1) for _, ids in calls[layer::layers]]), minlength=experts)
              for layer in range(layers)]
    return [int((c > 0).sum()) for c in counts], max(float(c.max() / c.sum()) for c in counts)
