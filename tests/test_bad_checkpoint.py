"""Damaged checkpoint files (weights, shard index, config.json) are errors that name the file and
say what to do; a pipeline already running keeps serving."""

import json
import random
import re

import pytest

import mii_core
from test_bad_input import assert_still_serves, copy_checkpoint

USER_ERRORS = (ValueError, TypeError)


@pytest.fixture(scope="module")
def gqa(checkpoint, oracle, pipeline):
    path = checkpoint("gqa")
    return path, pipeline(path), oracle(path)


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def random_bytes(data: bytes) -> bytes:
    return random.Random(0).randbytes(len(data))


def empty(data: bytes) -> bytes:
    return b""


def damage(folder, file_name, how):
    weights = folder / file_name
    weights.write_bytes(how(weights.read_bytes()))
    return weights


@pytest.mark.parametrize("how", [truncated, random_bytes, empty])
@pytest.mark.parametrize("weights_format, file_name", [("safetensors", "model.safetensors"),
                                                       ("bin", "pytorch_model.bin")])
def test_damaged_weights_file_is_named(gqa, checkpoint, tmp_path, weights_format, file_name, how):
    _, pipe, hf = gqa
    source = checkpoint("gqa", weights_format=weights_format)
    broken = damage(copy_checkpoint(source, tmp_path / "damaged"), file_name, how)
    with pytest.raises(ValueError, match=rf"cannot read weights file '{re.escape(str(broken))}' .*download it again"):
        mii_core.pipeline(str(broken.parent))
    assert_still_serves(pipe, hf)


def test_index_naming_a_missing_shard_is_named(gqa, checkpoint, tmp_path):
    _, pipe, hf = gqa
    sharded = copy_checkpoint(checkpoint("gqa", max_shard_size="20KB"), tmp_path / "sharded")
    shards = sorted(sharded.glob("model-*.safetensors"))
    assert len(shards) > 2, "fixture: the checkpoint must be sharded"
    shards[1].unlink()
    with pytest.raises(ValueError, match=rf"model\.safetensors\.index\.json' names shard files that are not in "
                                         rf"the folder: {re.escape(shards[1].name)}"):
        mii_core.pipeline(str(sharded))
    assert_still_serves(pipe, hf)


def broken_config(folder, edit):
    config_file = folder / "config.json"
    config_file.write_text(edit(json.loads(config_file.read_text())))
    return config_file


def drop_field(name):
    def edit(config):
        del config[name]
        return json.dumps(config)

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda config: json.dumps(config)[:-3], r"config\.json' is not valid JSON \("),
        (lambda config: json.dumps([config]), r"config\.json' must hold a JSON object \(\{\.\.\.\}\), found a list"),
        (lambda config: "", r"config\.json' is not valid JSON"),
        (drop_field("hidden_size"), r"config\.json' has no 'hidden_size', which the 'llama' architecture needs"),
        (drop_field("model_type"), r"config\.json has no model_type"),
    ],
    ids=["invalid-json", "not-an-object", "empty", "missing-required-field", "missing-model-type"],
)
def test_malformed_config_json_is_named(gqa, tmp_path, edit, message):
    path, pipe, hf = gqa
    config_file = broken_config(copy_checkpoint(path, tmp_path / "bad-config"), edit)
    with pytest.raises(USER_ERRORS, match=message) as failure:
        mii_core.pipeline(str(config_file.parent))
    assert str(config_file.parent) in str(failure.value)
    assert_still_serves(pipe, hf)
