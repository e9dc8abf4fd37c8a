"""The plugin kit's friction, as a third party met it (issue 17): each mistake an author makes is answered by
a message naming the tensor, rule, field or target, and a weight transform gets a plain tensor."""
from __future__ import annotations

import re
import textwrap

import pytest
import torch

from mii_core.loading.slices import LazySlice
from mii_core.model.weight_rules import Rule, RuleTable
from support.checkpoint_edits import REMOVE, edit_config, rename_tensors
from support.fake_plugins import architecture_plugin, install_fake_plugin
from test_plugins import run_python


def prepared(rule: Rule, tensor: torch.Tensor) -> torch.Tensor:
    target = RuleTable({"w.{i}": rule}).match("w.3")
    return target.prepare(LazySlice.of_tensor(tensor), spec=None)


def test_a_transform_gets_a_tensor_so_arithmetic_works():
    weight = torch.arange(6.0).reshape(2, 3)
    out = prepared(Rule("layers.{i}.w", transform=lambda t, spec: t + 1), weight)
    assert torch.equal(out, torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))


def test_a_transform_after_transpose_sees_the_transposed_tensor():
    weight = torch.arange(6.0).reshape(2, 3)
    out = prepared(Rule("layers.{i}.w", transpose=True, transform=lambda t, spec: t * 2), weight)
    assert torch.equal(out, torch.tensor([[0.0, 6.0], [2.0, 8.0], [4.0, 10.0]]))


def test_a_failing_transform_names_the_tensor_and_the_parameter():
    def broken(t, spec):
        return t.view(7, -1)

    with pytest.raises(ValueError, match=r"(?s)'w\.3'.*'layers\.3\.w'.*\(2, 3\).*RuntimeError"):
        prepared(Rule("layers.{i}.w", transform=broken), torch.zeros(2, 3))


def test_a_transform_that_returns_no_tensor_is_named():
    with pytest.raises(ValueError, match=r"'w\.3'.*returned a list, not a tensor"):
        prepared(Rule("layers.{i}.w", transform=lambda t, spec: t.tolist()), torch.zeros(2, 3))


def test_a_missing_config_field_is_said_once(checkpoint, tmp_path):
    import mii_core

    broken = edit_config(checkpoint("gqa"), tmp_path / "no-intermediate", intermediate_size=REMOVE)
    with pytest.raises(ValueError) as caught:
        mii_core.pipeline(str(broken))
    message = str(caught.value)
    assert "'intermediate_size'" in message and "config.json" in message, message
    assert message.count("has no") == 1 and "''" not in message, message  # not wrapped twice


def test_a_misspelt_rule_names_the_unused_checkpoint_tensor(checkpoint, tmp_path):
    import mii_core

    renamed = rename_tensors(checkpoint("gqa"), tmp_path / "renamed",
                             lambda name: name.replace("layers.1.mlp.down_proj", "layers.1.mlp.dwon_proj"))
    with pytest.raises(ValueError) as caught:
        mii_core.pipeline(str(renamed))
    message = str(caught.value)
    assert re.search(r"missing weights: .*layers\.1\.mlp\.down_proj", message), message
    assert re.search(r"no weight rule maps: .*layers\.1\.mlp\.dwon_proj", message), message


def test_a_misspelt_policy_class_is_named_in_the_listing_and_at_pipeline(checkpoint, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    module = install_fake_plugin(site, "misspelt", architecture_plugin(
        "'misspelt_arch', 'mii_plugin_llama.policy:LlamaPolcy'"))
    code, listing = run_python(["-m", "mii_core", "plugins"], extra_path=site)
    assert code == 0, listing
    assert re.search(r"misspelt_arch .*LlamaPolcy.*\n.*BROKEN: plugin 'misspelt' registered model_type "
                     r"'misspelt_arch' as 'mii_plugin_llama\.policy:LlamaPolcy'", listing), listing
    folder = edit_config(checkpoint("gqa"), tmp_path / "misspelt-model", model_type="misspelt_arch")
    script = textwrap.dedent(f"""
        import mii_core
        try:
            mii_core.pipeline({str(folder)!r})
        except ImportError as error:
            print(type(error).__name__, error)
            raise SystemExit(3)
        """)
    code, output = run_python(["-c", script], extra_path=site)
    assert code == 3, output
    assert f"plugin 'misspelt' registered model_type 'misspelt_arch'" in output, output
    assert "LlamaPolcy" in output and module  # the target named, not a bare AttributeError
