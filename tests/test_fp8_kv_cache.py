"""The FP8 KV cache (``inference_engine_config.kv_cache_dtype="fp8"``) against an independent float32
reference: HF transformers with every key and value rounded through float8 e4m3 where its cache stores
them (``Cache.update``: after rotary, before attention), the way the ops' contract says the engine stores
them. Greedy output must match under every schedule of the kit, on Llama (MHA), Mistral (GQA), Bloom
(ALiBi), Gemma 2 (attention soft-cap and a sliding window) and DeepSeek-V2 (a cache of the latent: HF's
cache stores the normalised latent and the rotated rope key too). On a GPU (benchmarks/gpu_checks.sh runs
this file there) the engine runs the Triton kernels and decode CUDA graphs in float32 against the same
float32 reference on the CPU."""
from unittest import mock

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.cache_utils import Cache

import support.arch_checkpoints as checkpoints
from mii_core.model.attention import Attention
from mii_core.testing import SCHEDULES, assert_greedy_matches_hf

# On a GPU: a twentieth of the free memory for the cache (the GPU check runs this beside other engines; the
# CPU's budget is cpu_budget_bytes whatever the fraction), decode graphs up to the kit's batch of 6 only
FP8_OPTIONS = {"inference_engine_config": {"kv_cache_dtype": "fp8", "cuda_graph_max_batch_size": 8,
                                           "state_manager": {"memory_config": {"mode": "fraction", "size": 0.05}}}}
E4M3_MAX = 448.0  # the largest finite float8_e4m3fn
REFERENCE_SCALE = 1.0  # the scale the reference divides by: the engine's scales must all be this
FAMILIES = {
    "llama-mha": checkpoints.llama("mha"),
    "mistral-gqa": checkpoints.family("test_arch_mistral", "full"),
    "bloom-alibi": checkpoints.family("test_arch_bloom", "8-heads"),
    "gemma2-softcap-window": checkpoints.family("test_arch_gemma2", "window"),
    "deepseek-v2-latent": checkpoints.family("test_arch_deepseek_v2", "q-lora"),
}
NEW_TOKENS = {"gemma2-softcap-window": 40}  # past its 16-token window


def round_through_e4m3(x: torch.Tensor, scale: float = REFERENCE_SCALE) -> torch.Tensor:
    """x / scale saturated to e4m3's range, rounded to nearest-even e4m3, times scale, in x's dtype."""
    return ((x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).float() * scale).to(x.dtype)


_plain_update = Cache.update


def _rounding_update(self, key_states, value_states, layer_idx, *args, **kwargs):
    return _plain_update(self, round_through_e4m3(key_states), round_through_e4m3(value_states), layer_idx,
                         *args, **kwargs)


def rounding_hf_cache():
    """While active, HF models store (and so attend over) every K and V rounded through e4m3."""
    return mock.patch.object(Cache, "update", _rounding_update)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    made = {}

    def get(family: str):
        if family not in made:
            made[family] = FAMILIES[family](tmp_path_factory.mktemp)[0]
        return made[family]
    return get


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_fp8_greedy_matches_rounded_reference(built, family, schedule):
    with rounding_hf_cache():
        assert_greedy_matches_hf(built(family), schedule, new_tokens=NEW_TOKENS.get(family, 16), **FP8_OPTIONS)


def _hf_last_logits(path, ids, rounded: bool) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        if not rounded:
            return model(torch.tensor([ids])).logits[0, -1]
        with rounding_hf_cache():
            return model(torch.tensor([ids]), use_cache=True).logits[0, -1]


def test_fp8_logits_follow_the_rounded_reference_not_the_plain_one(built):
    """The engine's logits sit on the rounded reference, far closer than the rounding moves them: the test
    above could not pass with K/V kept in float32. Its scales are the reference's."""
    import mii_core

    path = built("llama-mha")
    ids = torch.randint(3, 300, (40,), generator=torch.Generator().manual_seed(0)).tolist()
    pipe = mii_core.pipeline(str(path), **FP8_OPTIONS)
    try:
        attention = [m for m in pipe.engine.runner.model.modules() if isinstance(m, Attention)]
        assert attention and all(bool((m.params.kv_scales == REFERENCE_SCALE).all()) for m in attention)
        ours = pipe.engine.put([7], [ids])[0].cpu()
        pipe.engine.flush(7)
    finally:
        pipe.destroy()
    rounded, plain = _hf_last_logits(path, ids, True), _hf_last_logits(path, ids, False)
    moved = (rounded - plain).abs().max().item()
    assert moved > 1e-2, f"rounding K/V moves the reference's logits by only {moved}: the fixture cannot tell"
    torch.testing.assert_close(ours, rounded, atol=moved / 100, rtol=0)


def test_fp8_cache_holds_twice_the_tokens_of_a_16_bit_one(built):
    import mii_core

    budget = {"state_manager": {"memory_config": {"cpu_budget_bytes": 2**20}}}
    blocks = {}
    for kv_dtype in ("auto", "fp8"):
        pipe = mii_core.pipeline(str(built("llama-mha")), dtype="bfloat16", device="cpu",
                                 inference_engine_config={**budget, "kv_cache_dtype": kv_dtype})
        try:
            cache = pipe.engine.runner.kv_cache
            blocks[kv_dtype] = cache.num_blocks
            assert cache.data.dtype == (torch.float8_e4m3fn if kv_dtype == "fp8" else torch.bfloat16)
            # the reference kernels read values stored along the slots: the FP8 cache stores them so
            values = cache.layer(0)[1]
            assert (values.stride(1) == 1) == (kv_dtype == "fp8") and values.shape == cache.layer(0)[0].shape
        finally:
            pipe.destroy()
    assert blocks["fp8"] == 2 * blocks["auto"]
