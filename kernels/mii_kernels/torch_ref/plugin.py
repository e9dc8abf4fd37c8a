"""Registers the PyTorch reference ops at priority 0, so any faster kernel can override them."""
from mii_core.plugins import hookimpl

_OPS = {
    "rms_norm": "mii_kernels.torch_ref.norms:rms_norm",
    "offset_rms_norm": "mii_kernels.torch_ref.norms:offset_rms_norm",
    "layer_norm": "mii_kernels.torch_ref.norms:layer_norm",
    "rotary_write_kv": "mii_kernels.torch_ref.rotary:rotary_write_kv",
    "paged_attention": "mii_kernels.torch_ref.attention:paged_attention",
    "gated_activation": "mii_kernels.torch_ref.activations:gated_activation",
    "moe_experts": "mii_kernels.torch_ref.moe:moe_experts",
    "linear": "mii_kernels.torch_ref.linear:linear",
    "quant_linear": "mii_kernels.torch_ref.quant_linear:quant_linear",
    "quant_moe_experts": "mii_kernels.torch_ref.quant_linear:quant_moe_experts",
}


@hookimpl
def mii_core_register_kernels(registry) -> None:
    for op, target in _OPS.items():
        registry.register(op, target, devices=("cpu", "cuda"), priority=0, name=f"torch_ref.{op}")
