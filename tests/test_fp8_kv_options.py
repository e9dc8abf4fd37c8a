"""``inference_engine_config.kv_cache_dtype``: its values, and the refusals that name what to change."""
import pytest
import torch

import mii_core
from mii_core.engine.kv_dtype import prepare_kv_cache_dtype
from mii_core.kv_cache.fp8 import kv_cache_dtype
from support.kernel_sets import kernel_set


class NoAttention(torch.nn.Module):
    pass


@pytest.mark.parametrize("option, dtype", [("auto", torch.bfloat16), ("fp8", torch.float8_e4m3fn),
                                           ("fp8_e4m3", torch.float8_e4m3fn)])
def test_values_give_the_cache_dtype(option, dtype):
    assert kv_cache_dtype(option, torch.bfloat16) == dtype


def test_auto_asks_nothing_of_the_kernels_or_the_model():
    kernels = kernel_set(paged_attention="mii_kernels.torch_ref.norms:rms_norm")
    assert prepare_kv_cache_dtype("auto", NoAttention(), torch.float16, kernels, torch.device("cpu")) == torch.float16


def test_unknown_value_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"kv_cache_dtype.*'auto', 'fp8' or 'fp8_e4m3'"):
        mii_core.pipeline(str(tmp_path), inference_engine_config={"kv_cache_dtype": "int8"})


def test_a_kernel_without_fp8_support_is_refused_by_name():
    # a plain function in the place of paged_attention: it declares no supports_fp8_kv_cache
    kernels = kernel_set(paged_attention="mii_kernels.torch_ref.norms:rms_norm")
    with pytest.raises(ValueError, match=r"kv_cache_dtype='fp8'.*'paged_attention'.*'acme.paged_attention' of "
                                         r"plugin 'acme-kernels'.*kv_cache_dtype='auto'"):
        prepare_kv_cache_dtype("fp8", NoAttention(), torch.bfloat16, kernels, torch.device("cpu"))


def test_a_model_without_an_attention_taking_scales_is_refused():
    with pytest.raises(ValueError, match=r"no attention layer.*HoldsKVScales.*kv_cache_dtype='auto'"):
        prepare_kv_cache_dtype("fp8", NoAttention(), torch.bfloat16, kernel_set(), torch.device("cpu"))


def test_serve_takes_the_option_as_pipeline_does():
    from mii_core.serving.deploy import build_config

    config = build_config("some/model", None, None, {"inference_engine_config": {"kv_cache_dtype": "fp8_e4m3"}})
    assert config.model_conf.inference_engine_config.kv_cache_dtype == "fp8_e4m3"
    with pytest.raises(ValueError, match=r"kv_cache_dtype.*'auto', 'fp8' or 'fp8_e4m3'"):
        build_config("some/model", None, None, {"inference_engine_config": {"kv_cache_dtype": "e5m2"}})
