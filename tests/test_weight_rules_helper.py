"""module_rules: the .weight / .bias entries of a weight table written from module names.

Expected tables are written out by hand, entry by entry, as a plugin would have spelled them."""
import pytest

from mii_core.model.hf_common import megatron_layer_rules
from mii_core.model.weight_rules import Rule, RuleTable, module_rules, ungroup_qkv

LAYER = "transformer.h.{i}."


def test_names_get_each_part_on_both_sides():
    assert module_rules({"ln_1": "layers.{i}.attn_norm", "mlp.fc_in": "layers.{i}.mlp.up"}, prefix=LAYER) == {
        "transformer.h.{i}.ln_1.weight": "layers.{i}.attn_norm.weight",
        "transformer.h.{i}.ln_1.bias": "layers.{i}.attn_norm.bias",
        "transformer.h.{i}.mlp.fc_in.weight": "layers.{i}.mlp.up.weight",
        "transformer.h.{i}.mlp.fc_in.bias": "layers.{i}.mlp.up.bias",
    }


def test_weight_only_parts_and_no_prefix():
    assert module_rules({"transformer.norm_f": "final_norm", "lm_head": "lm_head"}, parts=("weight",)) == {
        "transformer.norm_f.weight": "final_norm.weight",
        "lm_head.weight": "lm_head.weight",
    }


def test_shard_pairs_keep_their_shard():
    assert module_rules({"mlp.w2": ("layers.{i}.mlp.up", "gate"), "mlp.w1": ("layers.{i}.mlp.up", "up")},
                        prefix=LAYER) == {
        "transformer.h.{i}.mlp.w2.weight": ("layers.{i}.mlp.up.weight", "gate"),
        "transformer.h.{i}.mlp.w2.bias": ("layers.{i}.mlp.up.bias", "gate"),
        "transformer.h.{i}.mlp.w1.weight": ("layers.{i}.mlp.up.weight", "up"),
        "transformer.h.{i}.mlp.w1.bias": ("layers.{i}.mlp.up.bias", "up"),
    }


def test_rules_keep_shard_transpose_and_transform():
    qkv = Rule("layers.{i}.attn.qkv", transform=ungroup_qkv)
    q = Rule("layers.{i}.attn.qkv", "q", transpose=True)
    assert module_rules({"attn.query_key_value": qkv, "attn.q": q}, prefix=LAYER) == {
        "transformer.h.{i}.attn.query_key_value.weight": Rule("layers.{i}.attn.qkv.weight", transform=ungroup_qkv),
        "transformer.h.{i}.attn.query_key_value.bias": Rule("layers.{i}.attn.qkv.bias", transform=ungroup_qkv),
        "transformer.h.{i}.attn.q.weight": Rule("layers.{i}.attn.qkv.weight", "q", transpose=True),
        "transformer.h.{i}.attn.q.bias": Rule("layers.{i}.attn.qkv.bias", "q", transpose=True),
    }


def test_entries_come_module_by_module():
    rules = module_rules({"a": "x", "b": "y"}, parts=("weight", "bias"))
    assert list(rules) == ["a.weight", "a.bias", "b.weight", "b.bias"]


def test_the_table_matches_a_layer_tensor():
    table = RuleTable(module_rules({"attn.q_proj": ("layers.{i}.attn.qkv", "q")}, prefix=LAYER))
    target = table.match("transformer.h.3.attn.q_proj.bias")
    assert (target.param_name, target.shard_id) == ("layers.3.attn.qkv.bias", "q")


def test_one_part_as_a_string_is_that_part():
    assert module_rules({"ln_f": "final_norm"}, parts="weight") == {"ln_f.weight": "final_norm.weight"}


@pytest.mark.parametrize("parts", [(), ("",), ("weight", 2)])
def test_no_parts_is_refused(parts):
    with pytest.raises(ValueError, match="parts"):
        module_rules({"ln_1": "layers.{i}.attn_norm"}, parts=parts)


@pytest.mark.parametrize("engine", [3, ("layers.{i}.attn.qkv",), ("a", "q", "extra")])
def test_a_bad_engine_module_is_named(engine):
    with pytest.raises(ValueError, match="module_rules maps a module"):
        module_rules({"ln_1": engine})


def test_megatron_layer_rules_name_the_four_projections():
    assert megatron_layer_rules("gpt_neox.layers.{i}.", attention="attention.") == {
        "gpt_neox.layers.{i}.attention.query_key_value.weight":
            Rule("layers.{i}.attn.qkv.weight", transform=ungroup_qkv),
        "gpt_neox.layers.{i}.attention.query_key_value.bias": Rule("layers.{i}.attn.qkv.bias", transform=ungroup_qkv),
        "gpt_neox.layers.{i}.attention.dense.weight": "layers.{i}.attn.o_proj.weight",
        "gpt_neox.layers.{i}.attention.dense.bias": "layers.{i}.attn.o_proj.bias",
        "gpt_neox.layers.{i}.mlp.dense_h_to_4h.weight": "layers.{i}.mlp.up.weight",
        "gpt_neox.layers.{i}.mlp.dense_h_to_4h.bias": "layers.{i}.mlp.up.bias",
        "gpt_neox.layers.{i}.mlp.dense_4h_to_h.weight": "layers.{i}.mlp.down.weight",
        "gpt_neox.layers.{i}.mlp.dense_4h_to_h.bias": "layers.{i}.mlp.down.bias",
    }
