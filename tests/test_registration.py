"""Registration semantics with third-party plugins installed as real distributions beside the shipped
ones (`llama`, `torch_ref`): overrides on purpose only, conflicts that nobody wins, all-or-nothing
registration, and the `mii-core plugins` listing.

Plugins load in entry-point name order, so every rule is checked with the rival plugin named to load
before `llama` (`aaa_*`) and after it (`zzz_*`): the outcome must be the same.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mii_core
from mii_core.plugins import PluginConflictError, get_plugins, reset_plugins
from mii_core.plugins.report import format_report
from support.fake_plugins import architecture_plugin, install_fake_plugin

BOTH_ORDERS = ["aaa_rival", "zzz_rival"]
SHIPPED_LLAMA = "mii_plugin_llama.policy:LlamaPolicy"
POLICY_CLASS = "\nclass Policy:\n    pass\n"


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path to install fake distributions into; plugins are reloaded around the test."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delenv("MII_CORE_PLUGINS", raising=False)
    reset_plugins()
    modules_before = set(sys.modules)
    yield folder
    reset_plugins()
    for name in set(sys.modules) - modules_before:
        if name.startswith("mii_test_plugin"):
            del sys.modules[name]


def install_rival(site: Path, name: str, *claim_options: str) -> str:
    """A plugin `name` claiming "llama" (its own Policy class) with the given register() options."""
    module = f"mii_test_plugin_{name}"
    options = "".join(f", {o}" for o in claim_options)
    install_fake_plugin(site, name, architecture_plugin(f'"llama", "{module}:Policy"{options}') + POLICY_CLASS,
                        module=module)
    return module


def messages(caplog, level) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name.startswith("mii_core")]


@pytest.mark.parametrize("rival", BOTH_ORDERS)
@pytest.mark.parametrize("options", [("priority=5",), ("override=True",)], ids=["priority", "override"])
def test_a_claim_made_on_purpose_serves_and_the_override_is_logged(site, caplog, rival, options):
    module = install_rival(site, rival, *options)
    with caplog.at_level(logging.WARNING):
        state = get_plugins()
    assert state.architectures.served_by("llama").plugin == rival
    assert state.architectures.load("llama") is sys.modules[module].Policy
    [logged] = [m for m in messages(caplog, logging.WARNING) if "overrides" in m]
    assert f"plugin '{rival}'" in logged and "plugin 'llama'" in logged and "model_type 'llama'" in logged
    assert not messages(caplog, logging.ERROR)


@pytest.mark.parametrize("rival", BOTH_ORDERS)
def test_a_same_priority_claim_is_a_conflict_nobody_wins(site, caplog, checkpoint, rival):
    module = f"mii_test_plugin_{rival}"
    install_fake_plugin(site, rival, architecture_plugin(f'"llama", "{module}:Policy"',
                                                         f'"rivalarch", "{module}:Policy"') + POLICY_CLASS)
    with caplog.at_level(logging.WARNING):
        state = get_plugins()
    assert {p.name for p in state.loaded} >= {rival, "llama"}  # the conflict fails neither plugin...
    assert state.architectures.served_by("rivalarch").plugin == rival  # ...nor its other model types
    with pytest.raises(PluginConflictError) as raised:
        mii_core.pipeline(str(checkpoint("gqa")))
    text = str(raised.value)
    for needed in ("model_type 'llama'", f"'{rival}'", "'llama'", "uninstall", "MII_CORE_PLUGINS",
                   "higher priority", "override=True"):
        assert needed in text, (needed, text)
    assert "llama" not in state.architectures.entries
    [logged] = messages(caplog, logging.ERROR)
    assert f"'{rival}'" in logged and "'llama'" in logged
    [conflict_line] = [line for line in format_report(state).splitlines() if "CONFLICT" in line]
    assert conflict_line.split()[:2] == ["llama", "CONFLICT:"] and f"'{rival}'" in conflict_line


@pytest.mark.parametrize("keep, served_by", [("llama", "llama"), ("aaa_rival", "aaa_rival")])
def test_a_conflict_is_resolved_by_loading_only_one(site, monkeypatch, keep, served_by):
    install_rival(site, "aaa_rival")
    monkeypatch.setenv("MII_CORE_PLUGINS", f"{keep},torch_ref")
    assert get_plugins().architectures.served_by("llama").plugin == served_by


def test_an_override_at_a_lower_priority_does_not_win(site):
    install_rival(site, "zzz_rival", "priority=-1", "override=True")
    assert get_plugins().architectures.served_by("llama").plugin == "llama"


HALF_REGISTERING_PLUGIN = """\
from mii_core import hookimpl

FAIL_IN = "{fail_in}"


def fail(hook):
    if hook == FAIL_IN:
        raise RuntimeError("broken on purpose in " + hook)


@hookimpl
def mii_core_register_architectures(registry):
    registry.register("halfway", "{module}:Policy")
    registry.register("llama", "{module}:Policy", override=True)
    fail("architectures")


@hookimpl
def mii_core_register_kernels(registry):
    registry.register("rms_norm", "{module}:rms_norm", devices=("cpu",), priority=99, name="halfway.rms_norm")
    fail("kernels")


@hookimpl
def mii_core_register_transports(registry):
    registry.register("halfway", "{module}:Transport")
    registry.register("{bad_call}", "{module}:Transport"{bad_keyword})
    fail("transports")
"""


def install_half_registering(site: Path, name: str, fail_in: str, bad_keyword: str = "") -> None:
    module = f"mii_test_plugin_{name}"
    source = HALF_REGISTERING_PLUGIN.format(fail_in=fail_in, module=module, bad_keyword=bad_keyword,
                                            bad_call="other" if bad_keyword else "second")
    install_fake_plugin(site, name, source, module=module)


FAILURES = [("architectures", "", "RuntimeError: broken on purpose in architectures"),
            ("kernels", "", "RuntimeError: broken on purpose in kernels"),
            ("transports", "", "RuntimeError: broken on purpose in transports"),
            # what the old hookspecs docstring taught: register() has no `plugin` argument
            ("never", ", plugin='halfway'", "TypeError"),
            ]


@pytest.mark.parametrize("name", ["aaa_halfway", "zzz_halfway"])
@pytest.mark.parametrize("fail_in, bad_keyword, error", FAILURES, ids=[f[0] for f in FAILURES])
def test_a_plugin_that_fails_while_registering_leaves_nothing_registered(site, name, fail_in, bad_keyword,
                                                                         error):
    install_half_registering(site, name, fail_in, bad_keyword)
    state = get_plugins()
    assert error in state.failed[name]
    assert {p.name for p in state.loaded} >= {"llama", "torch_ref"}
    assert "halfway" not in state.architectures.names() and "halfway" not in state.transports.names()
    assert state.architectures.served_by("llama").plugin == "llama"
    assert state.kernels.choose("rms_norm", "cpu").plugin == "torch_ref"
    leftovers = [c for r in (state.architectures, state.transports) for c in r.claims if c.plugin == name]
    assert leftovers + [k for k in state.kernels.entries if k.plugin == name] == []
    assert state.manager.get_plugin(name) is None
    with pytest.raises(ValueError, match=f"'{name}': {error}"):
        state.architectures.load("halfway")  # the missing-model error says which plugin failed
    [line] = [line for line in format_report(state).splitlines() if line.strip().startswith(name)]
    assert "FAILED" in line and error in line


def test_a_misspelt_hook_fails_the_plugin_by_name(site):
    install_fake_plugin(site, "typo", "from mii_core import hookimpl\n\n@hookimpl\n"
                                      "def mii_core_register_architecture(registry):\n    pass\n")
    state = get_plugins()
    assert "mii_core_register_architecture" in state.failed["typo"]
    assert {p.name for p in state.loaded} >= {"llama", "torch_ref"}


TRANSPORT_PLUGIN = """\
from mii_core import hookimpl

@hookimpl
def mii_core_register_transports(registry):
    registry.register("testproto", __name__ + ":Transport"{options})

class Transport:
    pass
"""


@pytest.mark.parametrize("options, served_by", [("", None), (", priority=1", "aaa_grpc"),
                                                (", override=True", "aaa_grpc")])
def test_transports_follow_the_same_rules(site, options, served_by):
    install_fake_plugin(site, "aaa_grpc", TRANSPORT_PLUGIN.format(options=options))
    install_fake_plugin(site, "zzz_grpc", TRANSPORT_PLUGIN.format(options=""))
    transports = get_plugins().transports
    if served_by is None:
        with pytest.raises(PluginConflictError, match="transport 'testproto'.*'aaa_grpc' and 'zzz_grpc'"):
            transports.load("testproto")
    else:
        assert transports.load("testproto") is sys.modules[f"mii_test_plugin_{served_by}"].Transport


KERNEL_PLUGIN = """\
from mii_core import hookimpl

@hookimpl
def mii_core_register_kernels(registry):
    registry.register("rms_norm", __name__ + ":rms_norm", devices=("cuda",), priority={priority})

def rms_norm(x, weight, eps):
    return x
"""


# above every shipped kernel (the Triton ones register at 10)
@pytest.mark.parametrize("first, second, chosen", [(50, 50, None), (60, 50, "aaa_norms"), (50, 60, "zzz_norms")])
def test_kernels_rank_by_priority_and_a_tie_between_plugins_is_an_error(site, first, second, chosen):
    install_fake_plugin(site, "aaa_norms", KERNEL_PLUGIN.format(priority=first))
    install_fake_plugin(site, "zzz_norms", KERNEL_PLUGIN.format(priority=second))
    kernels = get_plugins().kernels
    assert kernels.choose("rms_norm", "cpu").plugin == "torch_ref"  # their devices only
    if chosen is None:
        with pytest.raises(PluginConflictError, match="op 'rms_norm' on device 'cuda'.*'aaa_norms' and "
                                                      "'zzz_norms'.*higher priority"):
            kernels.resolve("rms_norm", "cuda")
    else:
        assert kernels.resolve("rms_norm", "cuda") is sys.modules[f"mii_test_plugin_{chosen}"].rms_norm


def test_cli_shows_who_serves_what(tmp_path):
    """`mii-core plugins` in a fresh process: the override, the overridden plugin and a failed plugin."""
    site = tmp_path / "site"
    site.mkdir()
    install_rival(site, "fastllama", "priority=5")
    install_half_registering(site, "halfway", "kernels")
    script = shutil.which("mii-core", path=str(Path(sys.executable).parent))
    assert script, "the mii-core console script is not installed next to this Python"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    env.pop("MII_CORE_PLUGINS", None)
    result = subprocess.run([script, "plugins"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    served = lines.index(next(line for line in lines if line.strip().startswith("llama ") and "Policy" in line))
    assert "mii_test_plugin_fastllama:Policy" in lines[served] and "'fastllama'" in lines[served]
    assert "overrides" in lines[served + 1] and SHIPPED_LLAMA in lines[served + 1]
    assert "'llama'" in lines[served + 1]
    [failed] = [line for line in lines if line.strip().startswith("halfway ")]
    assert "FAILED" in failed and "broken on purpose in kernels" in failed
    assert any(line.split()[:3] == ["rms_norm", "cpu", "torch_ref.rms_norm"] for line in lines), result.stdout
    assert "overrides" in result.stderr  # the warning naming both plugins


def test_two_distributions_declaring_one_plugin_name_are_both_refused(site):
    install_fake_plugin(site, "twin", architecture_plugin('"twinarch", __name__ + ":A"'), module="mii_test_plugin_a",
                        distribution="mii-twin-one")
    install_fake_plugin(site, "twin", architecture_plugin('"twinarch", __name__ + ":B"'), module="mii_test_plugin_b",
                        distribution="mii-twin-two")
    state = get_plugins()
    assert "mii-twin-one" in state.failed["twin"] and "mii-twin-two" in state.failed["twin"]
    assert "twinarch" not in state.architectures.names()
    assert {p.name for p in state.loaded} >= {"llama", "torch_ref"}
