"""Every hook a mii-core plugin can implement. Reading this file tells a plugin author everything.

A plugin is a module with ``@mii_core.hookimpl`` functions, exposed through the entry-point group
``mii_core.plugins`` in its distribution's metadata; the entry-point name is the plugin's name
(what ``mii-core plugins`` lists and ``MII_CORE_PLUGINS`` selects)::

    [project.entry-points."mii_core.plugins"]
    myarch = "my_package.plugin"

Plugins are loaded once per process (workers too). Each hook is called once, right after its plugin
is loaded, with the process-wide registry it names; registration must be cheap: name things as
``"package.module:Name"`` strings, do not import torch models (a target is imported only when used).

A plugin registers all or nothing: if its import or any of its hooks raises (a mistyped argument
included), everything it registered is removed again, ``mii-core plugins`` reports it FAILED with its
error, and the other plugins are unaffected. A misspelt hook name fails the plugin too.

**Who serves a name** is decided from every plugin's registrations at once, never from load order:
the highest ``priority`` wins; at equal priority a registration with ``override=True`` wins; any
other tie at the top (two plugins, same priority, both or neither with ``override``) is a conflict:
neither serves the name, and loading it raises :class:`~mii_core.plugins.claims.PluginConflictError`
naming both plugins. Every override is logged as a warning naming the winner and the plugins it beat.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from mii_core.plugins.registries import ArchitectureRegistry, KernelRegistry, TaskRegistry, TransportRegistry

PROJECT_NAME = "mii_core"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def mii_core_register_architectures(registry: "ArchitectureRegistry") -> None:
    """Declare the HF ``model_type`` values this plugin serves.

    ``registry.register(model_type, target, *, priority=0, override=False)``: ``target`` is a
    ``"package.module:PolicyClass"`` string, imported only when a checkpoint of that ``model_type``
    is loaded; the class subclasses :class:`mii_core.model.policy.ArchitecturePolicy`. Claim a
    model type another plugin also serves only on purpose: with a higher ``priority``, or with
    ``override=True`` to beat the claims at your priority (the shipped plugins use priority 0).
    A plugin module (``my_package/plugin.py``)::

        from mii_core import hookimpl

        @hookimpl
        def mii_core_register_architectures(registry):
            registry.register("myarch", "my_package.policy:MyArchPolicy")
            # replaces the shipped Llama plugin's policy; logged, and listed by `mii-core plugins`
            registry.register("llama", "my_package.policy:MyLlamaPolicy", override=True)
    """


@hookspec
def mii_core_register_kernels(registry: "KernelRegistry") -> None:
    """Offer implementations of engine ops (``paged_attention``, ``rotary_write_kv``, ``rms_norm``, ...).

    ``registry.register(op, target, devices=("cpu", "cuda"), priority=0, name=None)``: ``target`` is
    a ``"package.module:function"`` string; ``name`` labels it in listings (default: the target).
    For each op and device the model uses the implementation of highest priority; the PyTorch
    reference (``mii-kernels``) registers priority 0 and the shipped Triton kernels priority 10 on
    CUDA, so a kernel meant to replace them registers above that. Two
    plugins at the same top priority for one op and device are a conflict (an error naming both when
    a model on that device is built); there is no override flag, pick a distinct priority. The
    contract of each op is in :mod:`mii_core.model.ops`; a ``rotary_write_kv`` or ``paged_attention``
    that handles the FP8 KV cache sets ``supports_fp8_kv_cache = True`` on itself (without it,
    ``kv_cache_dtype="fp8"`` is refused naming the kernel). A plugin module::

        from mii_core import hookimpl

        @hookimpl
        def mii_core_register_kernels(registry):
            registry.register("rms_norm", "my_kernels.triton_norms:rms_norm", devices=("cuda",),
                              priority=20, name="my_kernels.rms_norm")
    """


@hookspec
def mii_core_register_transports(registry: "TransportRegistry") -> None:
    """Offer a front end (gRPC, REST, ...) under a name.

    ``registry.register(name, target, *, priority=0, override=False)``, with the same rules as
    architectures: two plugins offering one name at the same rank is an error naming both.
    The class subclasses :class:`mii_core.serving.transport.Transport` (its contract: errors by kind,
    API key, cancelling a request whose client left). A deployment starts it in its router process
    when its name is in ``serve(..., transports=[...])`` (or ``$MII_CORE_TRANSPORTS``). A plugin module::

        from mii_core import hookimpl

        @hookimpl
        def mii_core_register_transports(registry):
            registry.register("myproto", "my_server.transport:MyProtoTransport")
    """


@hookspec
def mii_core_register_tasks(registry: "TaskRegistry") -> None:
    """Offer MII Legacy tasks (``mii_core.legacy.deploy(task=...)``) for some HF ``model_type`` values (a
    diffusers pipeline folder's model type is its model_index.json ``_class_name``, e.g.
    ``"StableDiffusionPipeline"``).

    ``registry.register(task, target, *, model_types=(), priority=0, override=False)``: ``target`` is a
    ``"package.module:Class"`` string, imported only when a deployment of that task and model type is made;
    the class subclasses :class:`mii_core.legacy.task.TaskModel` (load a checkpoint folder on a device and
    dtype, the query keys it needs, a query → tensors, one forward pass over a padded batch, outputs → one
    response per query). Each (task, model type) pair is claimed on its own, with the same rules as
    architectures. The core knows no task by name. A plugin module::

        from mii_core import hookimpl

        @hookimpl
        def mii_core_register_tasks(registry):
            registry.register("sentiment", "my_tasks.sentiment:Sentiment", model_types=("bert", "roberta"))
    """
