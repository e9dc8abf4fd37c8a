"""``inference_engine_config.kv_cache_dtype``: its values, and the refusals that name what to change."""
import dataclasses

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


def fp8_shape(**options):
    from mii_core.kv_cache import KVCacheShape
    return KVCacheShape(2, 4, 16, 8, torch.float8_e4m3fn, **options)


def test_an_fp8_cache_stores_values_along_slots_only_where_both_kernels_read_them_so():
    """The reference kernels declare ``reads_slot_major_values``; a third-party attention or writer that
    does not keeps the plain layout (it was promised unit stride along the features); a 16-bit cache and a
    cache without a value plane keep it too."""
    from mii_core.engine.kv_dtype import with_value_layout

    assert with_value_layout(fp8_shape(), kernel_set()).slot_major_values
    for kernels in (kernel_set(paged_attention="mii_kernels.torch_ref.norms:rms_norm"),
                    kernel_set(rotary_write_kv="mii_kernels.torch_ref.norms:rms_norm")):
        assert not with_value_layout(fp8_shape(), kernels).slot_major_values
    assert not with_value_layout(fp8_shape(value_head_dim=8), kernel_set()).slot_major_values  # [key | value]
    assert not with_value_layout(fp8_shape(value_in_key=True, value_head_dim=8), kernel_set()).slot_major_values
    sixteen_bit = dataclasses.replace(fp8_shape(), dtype=torch.bfloat16)
    assert not with_value_layout(sixteen_bit, kernel_set()).slot_major_values


def test_the_triton_attention_takes_values_along_slots_unless_its_config_says_features(monkeypatch):
    """Measured faster on the H200 (W1's decode attention), the layout is the Triton kernels' default; the
    engine allocates the plain one when the attention's launch config asks for the features."""
    pytest.importorskip("triton", reason="triton comes with mii-kernels on Linux only")
    from mii_core.engine.kv_dtype import with_value_layout

    def triton_set():
        return kernel_set(paged_attention="mii_kernels.triton.attention:TritonAttention")

    assert with_value_layout(fp8_shape(), triton_set()).slot_major_values
    monkeypatch.setenv("MII_TRITON_ATTENTION_CONFIG", "fp8_values_along_features")
    assert not with_value_layout(fp8_shape(), triton_set()).slot_major_values


def test_a_slot_major_value_plane_is_the_same_view_stored_along_slots():
    """KVCache.layer's values: [blocks, block_size, heads, features] as always, unit stride along a block's
    slots, writing one slot's features touches that slot only, and the key plane is untouched."""
    from mii_core.kv_cache import KVCache

    cache = KVCache(fp8_shape(slot_major_values=True), num_blocks=3, device=torch.device("cpu"))
    keys, values = cache.layer(1)
    assert values.shape == keys.shape == (4, 8, 4, 16)  # 3 blocks + the scratch block
    assert values.stride(1) == 1 and values.stride(3) == 8 and keys.stride(3) == 1
    values.view(torch.uint8)[2, 5, 3] = torch.arange(1, 17, dtype=torch.uint8)
    touched = values.view(torch.uint8).nonzero().tolist()
    assert touched == [[2, 5, 3, f] for f in range(16)]
    assert not keys.view(torch.uint8).any() and not cache.layer(0)[1].view(torch.uint8).any()
    with pytest.raises(ValueError, match="value plane of their own"):
        fp8_shape(value_head_dim=8, slot_major_values=True)
