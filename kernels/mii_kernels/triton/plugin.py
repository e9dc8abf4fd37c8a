"""Registers the Triton kernels for CUDA at priority 10, above the PyTorch reference (priority 0).

Registration names import targets only; triton itself is imported when an op is first resolved.
"""
from importlib.util import find_spec

from mii_core.plugins import hookimpl

_OPS = {
    "rms_norm": "mii_kernels.triton.norms:rms_norm",
    "offset_rms_norm": "mii_kernels.triton.norms:offset_rms_norm",
    "layer_norm": "mii_kernels.triton.norms:layer_norm",
    "rotary_write_kv": "mii_kernels.triton.rotary:rotary_write_kv",
    "gated_activation": "mii_kernels.triton.activations:gated_activation",
    "moe_experts": "mii_kernels.triton.moe:TritonMoe",
    "paged_attention": "mii_kernels.triton.attention:TritonAttention",
    "linear": "mii_kernels.triton.linear:TritonLinear",
    "quant_linear": "mii_kernels.triton.quant_linear:TritonQuantLinear",
    "quant_moe_experts": "mii_kernels.triton.moe:TritonQuantMoe",
    "gated_linear": "mii_kernels.triton.linear:TritonGatedLinear",
    "gated_quant_linear": "mii_kernels.triton.quant_linear:TritonGatedQuantLinear",
    "rms_norm_linear": "mii_kernels.triton.linear:TritonNormLinear",
    "rms_norm_quant_linear": "mii_kernels.triton.quant_linear:TritonNormQuantLinear",
}


@hookimpl
def mii_core_register_kernels(registry) -> None:
    if find_spec("triton") is None:  # no wheel for this platform: the reference serves every device
        return
    for op, target in _OPS.items():
        registry.register(op, target, devices=("cuda",), priority=10, name=f"triton.{op}")
