"""A kernel set of the reference ops with some of them served by another (test) plugin: what a third-party
kernel plugin registering a few ops at a higher priority looks like to the blocks."""
from __future__ import annotations

from mii_core.model.ops import KernelSet
from mii_core.plugins.registries import KernelRegistry
from mii_kernels.torch_ref.plugin import _OPS as REFERENCE_OPS


def kernel_set(priority: int = 5, **replaced: str) -> KernelSet:
    """The reference kernels on the CPU, with each op in ``replaced`` served by plugin "acme-kernels"'s target
    ("module:function") at ``priority`` (the reference's is 0)."""
    registry = KernelRegistry()
    registry.current_plugin = "mii-kernels"
    for op, target in REFERENCE_OPS.items():
        registry.register(op, target, devices=("cpu",), name=f"torch_ref.{op}")
    registry.current_plugin = "acme-kernels"
    for op, target in replaced.items():
        registry.register(op, target, devices=("cpu",), priority=priority, name=f"acme.{op}")
    return KernelSet("cpu", registry)
