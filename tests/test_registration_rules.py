"""The registries' rules on their own (every registration order gives one outcome; bad calls are
refused with a message), and every plugin example in the docs run as a real installed plugin."""
from __future__ import annotations

import ast
import inspect
import itertools
import logging
import re
import sys
import tomllib
from pathlib import Path

import pytest

from mii_core.plugins import ENTRY_POINT_GROUP, PluginConflictError, get_plugins, hookspecs, reset_plugins
from mii_core.plugins.manager import LOADED
from mii_core.plugins.registries import ArchitectureRegistry, KernelRegistry, TaskRegistry, TransportRegistry
from support.fake_plugins import install_fake_plugin

REPO = Path(__file__).resolve().parents[1]

# (plugin, target, priority, override) claims on one name, and who must serve it (None: conflict)
CASES = [
    ([("a", "m:A", 0, False), ("b", "m:B", 1, False), ("c", "m:C", 0, True)], "b"),
    ([("a", "m:A", 0, False), ("b", "m:B", 0, True), ("c", "m:C", -3, True)], "b"),
    ([("a", "m:A", 0, False), ("b", "m:B", 0, False), ("c", "m:C", -1, True)], None),
    ([("a", "m:A", 2, True), ("b", "m:B", 2, True), ("c", "m:C", 1, False)], None),
]


@pytest.mark.parametrize("registry_class", [ArchitectureRegistry, TransportRegistry])
@pytest.mark.parametrize("claims, winner", CASES)
def test_every_registration_order_gives_the_same_outcome(registry_class, claims, winner):
    for order in itertools.permutations(claims):
        registry = registry_class()
        for plugin, target, priority, override in order:
            registry.current_plugin = plugin
            registry.register("x", target, priority=priority, override=override)
        if winner is None:
            with pytest.raises(PluginConflictError) as raised:
                registry.served_by("x")
            top = [c for c in claims if (c[2], c[3]) == max((c[2], c[3]) for c in claims)]
            assert all(f"'{c[0]}'" in str(raised.value) for c in top), order
            assert "'c'" not in str(raised.value), order  # a lower claim is not part of the conflict
        else:
            assert registry.served_by("x").plugin == winner, order


def test_kernel_choice_is_the_same_in_every_order():
    entries = [("a", 0, ("cpu", "cuda")), ("b", 3, ("cuda",)), ("c", 3, ("cpu",)), ("d", 1, ("cuda",))]
    for order in itertools.permutations(entries):
        registry = KernelRegistry()
        for plugin, priority, devices in order:
            registry.current_plugin = plugin
            registry.register("op", f"m:{plugin}", devices=devices, priority=priority)
        assert (registry.choose("op", "cuda").plugin, registry.choose("op", "cpu").plugin) == ("b", "c")


@pytest.mark.parametrize("call, error", [
    (lambda r: r.register("llama", "m:P", plugin="x"), TypeError),  # the old docstring's call
    (lambda r: r.register("llama", "m:P", 5), TypeError),  # priority is keyword-only
    (lambda r: r.register("llama", object()), TypeError),
    (lambda r: r.register("llama", "not a target"), TypeError),
    (lambda r: r.register("llama", "m:P", priority="high"), TypeError),
    (lambda r: r.register("llama", "m:P", override="yes"), TypeError),
    (lambda r: r.register("", "m:P"), TypeError),
])
def test_bad_architecture_registrations_are_refused(call, error):
    registry = ArchitectureRegistry()
    with pytest.raises(error):
        call(registry)
    assert registry.claims == []


def test_one_plugin_claiming_a_name_twice_is_refused():
    registry, kernels = ArchitectureRegistry(), KernelRegistry()
    registry.current_plugin = kernels.current_plugin = "p"
    registry.register("llama", "m:A")
    with pytest.raises(ValueError, match="plugin 'p' registers model_type 'llama' twice"):
        registry.register("llama", "m:B", priority=1)
    kernels.register("rms_norm", "m:a", devices=("cuda",))
    kernels.register("rms_norm", "m:b", devices=("cpu",))  # another device: fine
    with pytest.raises(ValueError, match="plugin 'p' registers op 'rms_norm' twice at priority 0"):
        kernels.register("rms_norm", "m:c", devices=("cpu", "cuda"))
    with pytest.raises(TypeError, match="devices"):
        kernels.register("rms_norm", "m:d", devices="cuda", priority=1)


def literal_blocks(docstring: str) -> list[str]:
    """The reST literal blocks (after a line ending in '::') of a docstring."""
    blocks, lines = [], inspect.cleandoc(docstring).splitlines()
    for index, line in enumerate(lines):
        if line.rstrip().endswith("::"):
            indent = len(line) - len(line.lstrip())
            body = list(itertools.takewhile(lambda l: not l.strip() or len(l) - len(l.lstrip()) > indent,
                                            lines[index + 1:]))
            blocks.append(inspect.cleandoc("\n".join(body)))
    return blocks


def fenced_blocks(markdown: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", markdown, re.DOTALL)


HOOKSPEC_DOCS = [hookspecs.__doc__] + [f.__doc__ for f in (hookspecs.mii_core_register_architectures,
                                                             hookspecs.mii_core_register_kernels,
                                                             hookspecs.mii_core_register_transports,
                                                             hookspecs.mii_core_register_tasks)]
README = (REPO / "plugins" / "README.md").read_text()
PLUGIN_EXAMPLES = ([b for doc in HOOKSPEC_DOCS for b in literal_blocks(doc) if "@hookimpl" in b]
                   + [b for b in fenced_blocks(README, "python") if "@hookimpl" in b])


def test_the_docs_show_an_example_for_every_hook():
    shown = " ".join(PLUGIN_EXAMPLES)
    for hook in ("mii_core_register_architectures", "mii_core_register_kernels", "mii_core_register_transports",
                 "mii_core_register_tasks"):
        assert f"def {hook}(registry)" in shown


@pytest.mark.parametrize("example", PLUGIN_EXAMPLES, ids=lambda e: re.search(r"def (\w+)", e).group(1))
def test_each_documented_plugin_example_loads_and_gets_what_it_claims(example, tmp_path, monkeypatch, caplog):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("MII_CORE_PLUGINS", raising=False)
    install_fake_plugin(tmp_path, "example", example, module="mii_test_plugin_doc_example")
    reset_plugins()
    try:
        with caplog.at_level(logging.ERROR):
            state = get_plugins()
        assert [p.status for p in state.plugins if p.name == "example"] == [LOADED], state.failed
        assert not caplog.records, [r.getMessage() for r in caplog.records]  # no conflict, no failure
        named = (state.architectures, state.transports, state.tasks)
        claims = [(r, c) for r in named for c in r.claims if c.plugin == "example"]
        kernels = [k for k in state.kernels.entries if k.plugin == "example"]
        assert claims or kernels, "the example registers nothing"
        for registry, claim in claims:  # an example that claims a name also serves it
            assert registry.served_by(claim.name) == claim
        for kernel in kernels:
            assert all(state.kernels.choose(kernel.op, d) == kernel for d in kernel.devices)
    finally:
        reset_plugins()
        sys.modules.pop("mii_test_plugin_doc_example", None)


@pytest.mark.parametrize("text", [hookspecs.__doc__, README], ids=["hookspecs", "plugins/README.md"])
def test_documented_entry_points_use_the_real_group(text):
    snippets = [b for b in literal_blocks(text) if "entry-points" in b] if text is hookspecs.__doc__ else \
        fenced_blocks(text, "toml")
    assert snippets
    for snippet in snippets:
        assert ENTRY_POINT_GROUP in tomllib.loads(snippet)["project"]["entry-points"]


def signature_shape(params: str) -> tuple[int, list[tuple[str, object]], list[tuple[str, object]]]:
    """(positional count, positional params with defaults, keyword-only params with defaults)."""
    args = ast.parse(f"def f({params}): pass").body[0].args
    with_defaults = args.args[len(args.args) - len(args.defaults):]
    return (len(args.args), [(a.arg, ast.literal_eval(d)) for a, d in zip(with_defaults, args.defaults)],
            [(a.arg, ast.literal_eval(d)) for a, d in zip(args.kwonlyargs, args.kw_defaults)])


def real_shape(registry_class) -> tuple[int, list[tuple[str, object]], list[tuple[str, object]]]:
    source = str(inspect.signature(registry_class.register)).strip("()").split(") ->")[0]
    return signature_shape(re.sub(r": [^,=]+", "", source).removeprefix("self, "))


DOCUMENTED_CALLS = [(hookspecs.mii_core_register_architectures.__doc__, ArchitectureRegistry),
                    (hookspecs.mii_core_register_kernels.__doc__, KernelRegistry),
                    (hookspecs.mii_core_register_transports.__doc__, TransportRegistry),
                    (hookspecs.mii_core_register_tasks.__doc__, TaskRegistry)]
DOCUMENTED_CALLS += list(zip(re.findall(r"^\| `mii_core_register_\w+` \| `[^|]*` \|", README, re.MULTILINE),
                             [ArchitectureRegistry, TransportRegistry, KernelRegistry]))


@pytest.mark.parametrize("text, registry_class", DOCUMENTED_CALLS)
def test_the_documented_register_signature_is_the_real_one(text, registry_class):
    [params] = re.findall(r"`registry\.register\((.*?)\)`", text)
    assert signature_shape(params) == real_shape(registry_class)
