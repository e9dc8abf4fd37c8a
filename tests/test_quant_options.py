"""The quantization options: MII's model option and DeepSpeed's key name the same modes; bad values are
ValueErrors that say what to change."""
import pytest

import mii_core
from mii_core.config.model import ModelConfig


@pytest.mark.parametrize("mode", ["fp8", "wf8af16", "wf6af16"])
def test_either_spelling_sets_the_mode(mode):
    by_model = ModelConfig(model_name_or_path="m", quantization_mode=mode)
    by_deepspeed = ModelConfig(model_name_or_path="m",
                               inference_engine_config={"quantization": {"quantization_mode": mode}})
    both = ModelConfig(model_name_or_path="m", quantization_mode=mode,
                       inference_engine_config={"quantization": {"quantization_mode": mode}})
    for config in (by_model, by_deepspeed, both):
        assert config.quantization_mode == mode
        assert config.inference_engine_config.quantization.quantization_mode == mode


@pytest.mark.parametrize("options, message", [
    (dict(quantization_mode="int4"),
     r"quantization_mode='int4' is not a quantization mode; choose one of fp8, wf8af16, wf6af16 \(or leave it unset"),
    (dict(inference_engine_config={"quantization": {"quantization_mode": "FP8"}}),
     r"inference_engine_config\.quantization\.quantization_mode='FP8' is not a quantization mode; choose one of fp8"),
    (dict(quantization_mode="fp8", inference_engine_config={"quantization": {"quantization_mode": "wf6af16"}}),
     r"quantization_mode='fp8' differs from inference_engine_config\.quantization\.quantization_mode='wf6af16'; "
     r"set one of them"),
])
def test_bad_quantization_option_is_named(options, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(model_name_or_path="m", **options)


def test_pipeline_refuses_an_unknown_mode_before_loading(tmp_path):
    with pytest.raises(ValueError, match="choose one of fp8, wf8af16, wf6af16"):
        mii_core.pipeline(str(tmp_path / "no-such-model"), quantization_mode="int8")


@pytest.mark.parametrize("quantization_config, scheme", [
    ({"quant_method": "gptq", "bits": 4, "group_size": 128}, r"quant_method 'gptq'"),
    ({"quant_method": "fp8", "weight_block_size": [128, 128], "activation_scheme": "static"},
     r"quant_method 'fp8' and activation_scheme 'static'"),
    ({"quant_method": "compressed-tensors", "format": "float-quantized"},
     r"compressed-tensors cannot read its quantization_config"),
])
def test_a_checkpoint_shipped_in_a_scheme_we_cannot_read_is_refused_naming_it(quantization_config, scheme, tmp_path):
    """(Shipped FP8 that can be read loads: tests/test_prequantized.py.)"""
    from support.checkpoint_edits import edit_config
    from support.tiny_llama import build_tiny_llama

    path = edit_config(build_tiny_llama(tmp_path / "llama"), tmp_path / "prequantized",
                       quantization_config=quantization_config)
    with pytest.raises(ValueError, match=scheme):
        mii_core.pipeline(str(path))
