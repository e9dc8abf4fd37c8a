"""Every hook a mii-core plugin can implement. Reading this file tells a plugin author everything.

A plugin is a module with ``@mii_core.hookimpl`` functions, exposed through the entry-point group
``mii_core.plugins`` in its distribution's metadata::

    [project.entry-points."mii_core.plugins"]
    myarch = "my_package.plugin"

Plugins are loaded once per process (workers too). All hooks are called once, right after loading,
with the process-wide registries; registration must be cheap: name things, do not import torch models.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from mii_core.plugins.registries import ArchitectureRegistry, KernelRegistry, TransportRegistry

PROJECT_NAME = "mii_core"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def mii_core_register_architectures(registry: "ArchitectureRegistry") -> None:
    """Declare the HF ``model_type`` values this plugin serves.

    Call ``registry.register(model_type, "package.module:PolicyClass", plugin=...)``. The target is
    imported only when a model of that type is loaded, so listing plugins stays cheap. The policy
    class must subclass :class:`mii_core.model.policy.ArchitecturePolicy`. Registering a model type
    that another plugin already registered is an error naming both plugins.
    """


@hookspec
def mii_core_register_kernels(registry: "KernelRegistry") -> None:
    """Offer implementations of engine ops (``blocked_attention``, ``rms_norm``, ...).

    Call ``registry.register(op, "package.module:function", devices=("cpu", "cuda"), priority=0,
    name=...)``. For each op and device the model uses the implementation of highest priority; the
    PyTorch reference (``mii-kernels``) registers priority 0 so faster kernels can override it. The
    contract of each op is in :mod:`mii_core.model.ops`.
    """


@hookspec
def mii_core_register_transports(registry: "TransportRegistry") -> None:
    """Offer a front end (gRPC, REST, ...) under a name: ``registry.register(name, "module:Class")``.

    The class subclasses :class:`mii_core.serving.transport.Transport` (its contract: errors by kind,
    API key, cancelling a request whose client left). A deployment starts it in its router process
    when its name is in ``serve(..., transports=[...])`` (or ``$MII_CORE_TRANSPORTS``).
    """
