"""Registers the Triton kernels for CUDA above the PyTorch reference (priority 0)."""
from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_kernels(registry) -> None:
    registry.register("paged_attention", "mii_kernels.triton.attention:paged_attention", devices=("cuda",), priority=10, name="triton.paged_attention")
