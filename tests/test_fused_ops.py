"""The kernel set's fused ops (ops.py's ``FUSED_OPS``): used only where the plugin serving one serves every op
it stands for, and composed from those ops otherwise or where it answers ``NotImplemented``. Test plugins as
a third party registers them, on the CPU beside the reference ops; each records its calls."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support.kernel_sets import kernel_set  # noqa: E402

from mii_kernels.torch_ref import activations as ref_activations  # noqa: E402
from mii_kernels.torch_ref import linear as ref_linear  # noqa: E402

CALLS: list[str] = []


def acme_gated_linear(x, weight, bias, activation):
    CALLS.append("acme.gated_linear")
    return ref_linear.linear(ref_activations.gated_activation(x, activation), weight, bias) + 1000.0


def acme_gated_linear_declining(x, weight, bias, activation):
    CALLS.append("acme.gated_linear")
    return NotImplemented


def acme_linear(x, weight, bias):
    CALLS.append("acme.linear")
    return ref_linear.linear(x, weight, bias)


def acme_gated_activation(x, activation, amax=None):
    CALLS.append("acme.gated_activation")
    return ref_activations.gated_activation(x, activation, amax)


def operands():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(3, 16, generator=gen), torch.randn(5, 8, generator=gen)


def composed(x, weight):
    return ref_linear.linear(ref_activations.gated_activation(x, "silu"), weight, None)


def test_a_fused_op_from_the_plugin_serving_what_it_fuses_is_used():
    CALLS.clear()
    kernels = kernel_set(gated_linear=f"{__name__}:acme_gated_linear", linear=f"{__name__}:acme_linear",
                         gated_activation=f"{__name__}:acme_gated_activation")
    x, weight = operands()
    out = kernels.gated_linear(x, weight, None, "silu")
    assert CALLS == ["acme.gated_linear"]
    torch.testing.assert_close(out, composed(x, weight) + 1000.0)  # the fused op's own answer, marked


def test_a_fused_op_is_not_used_over_another_plugins_part():
    """acme fuses gated_activation + linear but only the reference serves linear here: composing keeps the
    reference linear (as a plugin replacing linear alone must never be bypassed by another's fusion)."""
    CALLS.clear()
    kernels = kernel_set(gated_linear=f"{__name__}:acme_gated_linear",
                         gated_activation=f"{__name__}:acme_gated_activation")
    assert kernels.fused("gated_linear") is None
    x, weight = operands()
    torch.testing.assert_close(kernels.gated_linear(x, weight, None, "silu"), composed(x, weight))
    assert CALLS == ["acme.gated_activation"]


def test_a_fused_op_declining_a_shape_is_composed_from_the_ops():
    CALLS.clear()
    kernels = kernel_set(gated_linear=f"{__name__}:acme_gated_linear_declining", linear=f"{__name__}:acme_linear",
                         gated_activation=f"{__name__}:acme_gated_activation")
    x, weight = operands()
    torch.testing.assert_close(kernels.gated_linear(x, weight, None, "silu"), composed(x, weight))
    assert CALLS == ["acme.gated_linear", "acme.gated_activation", "acme.linear"]


def test_without_any_fused_op_the_reference_ops_compose():
    x, weight = operands()
    kernels = kernel_set()
    assert kernels.fused("gated_linear") is None and kernels.fused("gated_quant_linear") is None
    torch.testing.assert_close(kernels.gated_linear(x, weight, None, "silu"), composed(x, weight))
