"""``offset_rms_norm`` (the Gemmas' (1 + w) norm) is an op of its own: ``OffsetRMSNorm`` calls it through the
kernels it is given, and a kernel plugin that implements only ``rms_norm`` (the old signature) leaves it to the
PyTorch reference, which matches HF's GemmaRMSNorm."""
import sys

import pytest
import torch

from mii_core.model.norm import OffsetRMSNorm
from support.kernel_sets import kernel_set

CALLS = []


def old_rms_norm(x, weight, eps, residual=None):
    """A third party's ``rms_norm``, written before ``offset_rms_norm`` existed."""
    CALLS.append("old_rms_norm")
    return x


def recording_offset_rms_norm(x, weight, eps, residual=None):
    CALLS.append(("offset_rms_norm", residual is not None))
    return x if residual is None else (x, x + residual)


@pytest.fixture(autouse=True)
def _no_calls():
    CALLS.clear()


def gemma_norm(kernels, weight, dtype):
    norm = OffsetRMSNorm(weight.shape[0], 1e-6, kernels, torch.device("cpu"), dtype)
    with torch.no_grad():
        norm.weight.copy_(weight)
    return norm


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_plugin_with_only_rms_norm_leaves_the_offset_norm_to_the_reference(dtype):
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

    kernels = kernel_set(20, rms_norm=f"{__name__}:old_rms_norm")
    assert kernels.choices["rms_norm"].name == "acme.rms_norm"
    assert kernels.choices["offset_rms_norm"].name == "torch_ref.offset_rms_norm"
    generator = torch.Generator().manual_seed(0)
    x, residual, w = (torch.randn(*shape, generator=generator).to(dtype) for shape in ((5, 48), (5, 48), (48,)))
    hf = GemmaRMSNorm(48, eps=1e-6).to(dtype)
    with torch.no_grad():
        hf.weight.copy_(w)
        normed, summed = gemma_norm(kernels, w, dtype)(x, residual)
        assert torch.equal(summed, x + residual)
        assert torch.equal(normed, hf(x + residual))
    assert CALLS == []  # the third party's rms_norm was never asked for Gemma's norm


def test_offset_norm_goes_through_the_kernels_it_is_given():
    kernels = kernel_set(20, offset_rms_norm=f"{__name__}:recording_offset_rms_norm")
    norm = gemma_norm(kernels, torch.zeros(8), torch.float32)
    x = torch.ones(2, 8)
    norm(x)
    norm(x, x)
    assert CALLS == [("offset_rms_norm", False), ("offset_rms_norm", True)]
    assert sys.modules[__name__].recording_offset_rms_norm is kernels.op("offset_rms_norm")
