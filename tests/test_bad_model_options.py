"""Bad model options (MII's, DeepSpeed's engine keys, device, memory, environment) are refused with
an error that names the option and what to change; a pipeline already running keeps serving."""

import re

import pytest
import torch

import mii_core
from test_bad_input import PROMPT, assert_still_serves

MEMORY = "inference_engine_config.state_manager.memory_config"


@pytest.fixture(scope="module")
def gqa(checkpoint, oracle, pipeline):
    path = checkpoint("gqa")
    return path, pipeline(path), oracle(path)


def engine_options(state_manager=None, **sections):
    return {"inference_engine_config": {**sections, **({"state_manager": state_manager} if state_manager else {})}}


@pytest.mark.parametrize(
    "options, message",
    [
        # unknown nested keys list the options of their own level, not the top-level ones
        (engine_options({"max_contxt": 64}),
         r"unknown option 'inference_engine_config\.state_manager\.max_contxt'; valid options here are: "
         r"enable_prefix_caching, kv_block_size, max_context, "),
        (engine_options({"memory_config": {"mode": "allocate", "blocks": 4}}),
         r"unknown option '.*memory_config\.blocks'; valid options here are: cpu_budget_bytes, mode, size$"),
        # DeepSpeed keys mii-core does not honour yet are refused, not ignored
        (engine_options(tensor_parallel={"tp_size": 2}),
         r"inference_engine_config\.tensor_parallel\.tp_size=2 differs from tensor_parallel=1; set the model option"),
        (engine_options({"offload": True}), r"inference_engine_config\.state_manager\.offload=True is not supported"),
        (engine_options(quantization={"quantization_mode": "int4"}),
         r"inference_engine_config\.quantization\.quantization_mode='int4' is not a quantization mode; choose one "
         r"of fp8, wf8af16, wf6af16"),
        # strict types where a conversion would change meaning
        (engine_options({"memory_config": {"mode": "allocate", "size": 1.7}}),
         r"'allocate' needs size = a whole number of KV blocks .*got size=1\.7"),
        (engine_options({"max_context": True}), r"'inference_engine_config\.state_manager\.max_context' \(got True\)"),
        (dict(all_rank_output="no"), r"'all_rank_output' \(got 'no'\)"),
        # MII's task option: only text generation
        (dict(task="summarization"), r"'task' \(got 'summarization'\): Input should be 'text-generation'"),
    ],
    ids=lambda value: value if isinstance(value, str) else repr(value)[:50],
)
def test_bad_model_option_is_named(gqa, options, message):
    path, pipe, hf = gqa
    with pytest.raises(ValueError, match=message):
        mii_core.pipeline(str(path), **options)
    assert_still_serves(pipe, hf)


def test_task_text_generation_is_accepted_in_model_config(gqa):
    """MII's own example: pipeline(model_config={"model_name_or_path": ..., "task": "text-generation"})."""
    path, _, hf = gqa
    pipe = mii_core.pipeline(model_config={"model_name_or_path": str(path), "task": "text-generation"})
    try:
        assert_still_serves(pipe, hf)
    finally:
        pipe.destroy()


def test_model_path_given_twice_must_agree(gqa, tmp_path):
    path, pipe, hf = gqa
    other = str(tmp_path / "other-model")
    with pytest.raises(ValueError, match=re.escape(repr(str(path))) + ".*" + re.escape(repr(other))):
        mii_core.pipeline(str(path), model_config={"model_name_or_path": other})
    assert_still_serves(pipe, hf)


@pytest.mark.parametrize("value", ["abc", "0", "-2"])
def test_bad_world_size_is_named(gqa, monkeypatch, value):
    path, pipe, hf = gqa
    monkeypatch.setenv("WORLD_SIZE", value)
    with pytest.raises(ValueError, match=rf"WORLD_SIZE='{value}' must be a positive integer"):
        mii_core.pipeline(str(path))
    assert_still_serves(pipe, hf)


def unusable_devices():
    """(device option, expected message) pairs that are wrong on this machine, CPU-only or not."""
    cases = [("meta", r"device='meta' is not supported; available here: cpu"),  # torch knows it, we do not
             ("tpu:0", r"device='tpu:0' is not a device name; available here: cpu")]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        cases.append((f"cuda:{count}", rf"device='cuda:{count}' but this machine has {count} CUDA device"))
    else:
        cases.append(("cuda", r"device='cuda' but CUDA is not available on this machine.*use one of: cpu"))
    return cases


@pytest.mark.parametrize("device, message", unusable_devices())
def test_unusable_device_names_the_option_and_what_exists(gqa, device, message):
    path, pipe, hf = gqa
    with pytest.raises(ValueError, match=message):
        mii_core.pipeline(str(path), device=device)
    assert_still_serves(pipe, hf)


@pytest.mark.parametrize(
    "memory, message",
    [
        # gqa: 2 layers x 2 (K, V) x 128 tokens x 2 kv heads x 16 dims x 4 bytes = 65536 bytes a block
        ({"mode": "fraction", "cpu_budget_bytes": 1000},
         rf"{MEMORY}\.cpu_budget_bytes=1000 is too small: one KV block takes 65536 bytes"),
        ({"mode": "reserve", "size": 2**30}, rf"{MEMORY}\.mode 'reserve' .* no meaning on CPU"),
        # 10**12 blocks of 64 KiB: more memory than any machine has; refused before allocating
        ({"mode": "allocate", "size": 10**12}, r"KV cache of 1000000000000 blocks needs 65536000000000000 bytes"),
    ],
    ids=["cpu-budget-below-one-block", "reserve-on-cpu", "allocate-huge"],
)
def test_bad_kv_memory_is_named(gqa, memory, message):
    path, pipe, hf = gqa
    with pytest.raises(ValueError, match=message):
        mii_core.pipeline(str(path), device="cpu", **engine_options({"memory_config": memory}))
    assert_still_serves(pipe, hf)
