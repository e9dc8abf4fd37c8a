"""Checkpoints shipped in FP8 load as they are stored, without re-quantizing (issue 18): transformers'
block-wise FP8 and compressed-tensors' float8, each written from a tiny checkpoint by the format's own
library (tests/support/shipped_fp8.py). Oracle: transformers' float32 model on the checkpoint's weights as
that library dequantizes them; the engine's greedy tokens must equal it, token for token (float32
activations: the shipped weights run weight-only). Any scheme we cannot read is a clear error."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

import mii_core
from mii_core.engine.builder import load_policy
from mii_core.testing.parity import PROMPTS
from support import arch_checkpoints as arch
from support.quant_reference import reference_greedy
from support.shipped_fp8 import (CT_BLOCK, compressed_tensors_dequantize, transformers_fp8_dequantize,
                                 write_compressed_tensors_fp8, write_dequantized, write_transformers_fp8)

NEW_TOKENS = 10
ENGINE = {"state_manager": {"memory_config": {"mode": "allocate", "size": 64}}, "cuda_graph_max_batch_size": 2}
SHIPPED_PROMPTS = (PROMPTS[1], PROMPTS[3])  # a short one and one of more than 8 tokens
# (family builder, weight_block_size [rows, columns], modules left unquantized, one shipped layer to inspect)
TRANSFORMERS_FP8 = {
    "llama": (arch.llama("gqa"), (16, 32), ["lm_head", "model.layers.0.self_attn.o_proj"],
              "model.layers.1.self_attn.q_proj"),
    # blocks of 8 rows: the [8, 64] router is shipped too (dequantized as it loads: the engine keeps it in
    # the model's dtype) while the [1, 64] shared-expert gate stays unquantized (8 does not divide 1)
    "qwen2_moe": (arch.family("test_arch_qwen2_moe", "mixed"), (8, 16),
                  ["lm_head", "model.layers.0.mlp.shared_expert.down_proj"], "model.layers.0.mlp.experts.3.up_proj"),
    # every expert's down matrix of layer 0 left unquantized: its gate|up stack is shipped, its down stack not
    "qwen2_moe-mixed-stacks": (arch.family("test_arch_qwen2_moe", "mixed"), (8, 16),
                               ["lm_head", "model.layers.0.mlp.shared_expert.down_proj",
                                *(f"model.layers.0.mlp.experts.{e}.down_proj" for e in range(8))],
                               "model.layers.0.mlp.experts.5.gate_proj"),
}


def _greedy(path: Path, token_lists, **options) -> tuple[list[list[int]], torch.nn.Module]:
    pipe = mii_core.pipeline(str(path), dtype="float32", inference_engine_config=ENGINE, **options)
    try:
        got = [list(pipe.generate_tokens([ids], max_new_tokens=NEW_TOKENS, do_sample=False,
                                         ignore_eos=True)[0].token_ids) for ids in token_lists]
        return got, pipe.engine.model
    finally:
        pipe.destroy()


def _token_lists(path: Path):
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return [tokenizer(prompt)["input_ids"] for prompt in SHIPPED_PROMPTS]


def _shipped_weights(model: torch.nn.Module) -> list:
    """Every quantized weight the engine holds."""
    from mii_core.model.parameters import WeightSlot

    slots = [value for module in model.modules() for value in vars(module).values() if isinstance(value, WeightSlot)]
    return [slot.quantized for slot in slots if slot.quantized is not None]


def _held_in_full_precision(model: torch.nn.Module, path: Path, module_name: str) -> bool:
    """Whether HF module ``module_name``'s weight is an ordinary (not quantized) engine parameter."""
    target = load_policy(path).map_weight(f"{module_name}.weight")
    return not model.get_parameter(target.param_name).is_meta


@pytest.fixture(scope="module", params=sorted(TRANSFORMERS_FP8))
def transformers_fp8(request, tmp_path_factory):
    build, block, not_convert, inspected = TRANSFORMERS_FP8[request.param]
    source, _reference = build(tmp_path_factory.mktemp)
    shipped = write_transformers_fp8(source, tmp_path_factory.mktemp("fp8") / "ckpt", block, not_convert)
    return shipped, not_convert, inspected


def test_transformers_fp8_greedy_matches_dequantized_reference(transformers_fp8, tmp_path):
    shipped, _not_convert, _inspected = transformers_fp8
    token_lists = _token_lists(shipped)
    got, _model = _greedy(shipped, token_lists)
    folder, shipped_names = write_dequantized(shipped, tmp_path / "reference", "_scale_inv", transformers_fp8_dequantize)
    assert len(shipped_names) > 4, "the fixture shipped too few weights in FP8"
    assert got == reference_greedy(folder, token_lists, NEW_TOKENS, "wf8af16", set())


def test_transformers_fp8_codes_and_scales_load_as_shipped(transformers_fp8):
    """The engine holds the checkpoint's own e4m3 bytes and block scales (nothing re-quantized), and the
    modules_to_not_convert layer stays in full precision."""
    shipped, not_convert, inspected = transformers_fp8
    config = json.loads((shipped / "config.json").read_text())["quantization_config"]
    block_rows, block_columns = config["weight_block_size"]
    tensors = {k: v for f in shipped.glob("*.safetensors") for k, v in load_file(str(f)).items()}
    codes, scale = tensors[f"{inspected}.weight"], tensors[f"{inspected}.weight_scale_inv"]
    _got, model = _greedy(shipped, _token_lists(shipped)[:1])
    held = _shipped_weights(model)
    assert held and all(w.group_size == block_columns and w.data.dtype == torch.float8_e4m3fn for w in held)
    rows = scale.repeat_interleave(block_rows, dim=0)[:codes.shape[0]]
    assert any(_holds(w, codes, rows) for w in held), f"no engine weight holds {inspected}'s bytes and scales"
    layer = not_convert[1]
    assert tensors[f"{layer}.weight"].dtype == torch.float32  # written unquantized, and loaded so:
    assert _held_in_full_precision(model, shipped, layer)


def _holds(weight, codes: torch.Tensor, scale_rows: torch.Tensor) -> bool:
    """Whether ``weight`` (a linear, or one expert of a stack) holds ``codes`` and ``scale_rows`` as some run of
    its rows, bit for bit."""
    stack = weight.data.view(torch.uint8).reshape(-1, *weight.data.shape[-2:])
    scales = weight.scale.reshape(-1, *weight.scale.shape[-2:])
    target = codes.view(torch.uint8).to(stack.device)
    scale_rows = scale_rows.to(scales.device)
    for matrix, matrix_scales in zip(stack, scales):
        for start in range(matrix.shape[0] - target.shape[0] + 1):
            rows = slice(start, start + target.shape[0])
            if torch.equal(matrix[rows], target) and torch.equal(matrix_scales[rows], scale_rows.float()):
                return True
    return False


@pytest.mark.parametrize("strategy", ["channel", "tensor", "block"])
def test_compressed_tensors_fp8_greedy_matches_dequantized_reference(strategy, tmp_path):
    pytest.importorskip("compressed_tensors", reason="the extra mii-core[compressed-tensors] is not installed")
    source = arch.llama("gqa")(arch.folder_maker(tmp_path))[0]
    shipped = write_compressed_tensors_fp8(source, tmp_path / "ct", strategy,
                                           ignore=["lm_head", "model.layers.0.mlp.down_proj"])
    token_lists = _token_lists(shipped)
    got, model = _greedy(shipped, token_lists)
    assert _held_in_full_precision(model, shipped, "model.layers.0.mlp.down_proj")
    assert not _held_in_full_precision(model, shipped, "model.layers.1.mlp.down_proj")
    if strategy == "block":  # the checkpoint's own block scales, held per row and group of columns
        config = json.loads((shipped / "config.json").read_text())["quantization_config"]
        assert config["config_groups"]["group_0"]["weights"]["block_structure"] == CT_BLOCK
        held = _shipped_weights(model)
        assert held and all(w.group_size == CT_BLOCK[1] for w in held)
        tensors = {k: v for f in shipped.glob("*.safetensors") for k, v in load_file(str(f)).items()}
        inspected = "model.layers.1.self_attn.o_proj"
        codes, scale = tensors[f"{inspected}.weight"], tensors[f"{inspected}.weight_scale"]
        rows = scale.repeat_interleave(CT_BLOCK[0], dim=0)[:codes.shape[0]]
        assert any(_holds(w, codes, rows) for w in held), "no engine weight holds o_proj's bytes and block scales"
    folder, shipped_names = write_dequantized(shipped, tmp_path / "reference", "_scale",
                                              compressed_tensors_dequantize(strategy))
    assert len(shipped_names) > 4, "the fixture shipped too few weights in FP8"
    assert got == reference_greedy(folder, token_lists, NEW_TOKENS, "wf8af16", set())


def test_per_channel_checkpoint_runs_fp8_gemms_with_mode_fp8(tmp_path):
    """quantization_mode="fp8" on compressed-tensors' per-channel float8: the shipped codes with dynamic
    per-tensor activations in steps of more than 8 tokens (the "fp8" contract); the reference quantizes the
    inputs of the shipped linears alike (tests/support/quant_reference.py)."""
    pytest.importorskip("compressed_tensors", reason="the extra mii-core[compressed-tensors] is not installed")
    source = arch.llama("gqa")(arch.folder_maker(tmp_path))[0]
    shipped = write_compressed_tensors_fp8(source, tmp_path / "ct", "channel", ignore=["lm_head"])
    token_lists = _token_lists(shipped)
    got, model = _greedy(shipped, token_lists, quantization_mode="fp8")
    assert {w.mode for w in _shipped_weights(model)} == {"fp8"}
    folder, shipped_names = write_dequantized(shipped, tmp_path / "reference", "_scale",
                                              compressed_tensors_dequantize("channel"))
    assert got == reference_greedy(folder, token_lists, NEW_TOKENS, "fp8", shipped_names)


# ---- what is refused ----

@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    return arch.llama("gqa")(tmp_path_factory.mktemp)[0]


def _with_quantization_config(source: Path, dest: Path, quantization: dict) -> Path:
    shutil.copytree(source, dest)
    config = json.loads((dest / "config.json").read_text())
    config["quantization_config"] = quantization
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def _ct_config(weights: dict, inputs: dict | None = None, fmt: str = "float-quantized") -> dict:
    group = {"targets": ["Linear"], "weights": weights, "input_activations": inputs}
    return {"quant_method": "compressed-tensors", "format": fmt, "config_groups": {"group_0": group},
            "ignore": ["lm_head"], "quantization_status": "compressed"}


FP8_WEIGHTS = {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True, "dynamic": False}
UNREADABLE = {
    "gptq": ({"quant_method": "gptq", "bits": 4, "group_size": 128}, r"quant_method 'gptq'"),
    "awq": ({"quant_method": "awq", "bits": 4, "version": "gemm"}, r"quant_method 'awq'"),
    "bitsandbytes": ({"quant_method": "bitsandbytes", "load_in_4bit": True}, r"quant_method 'bitsandbytes'"),
    "fp8-static": ({"quant_method": "fp8", "activation_scheme": "static", "weight_block_size": None},
                   r"activation_scheme 'static' \(only 'dynamic'\)"),
    "ct-int8": (_ct_config({**FP8_WEIGHTS, "type": "int"}, fmt="int-quantized"), r"type 'int'"),
    "ct-int4-packed": (_ct_config({"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128,
                                  "symmetric": True}, fmt="pack-quantized"), r"num_bits 4 type 'int' strategy 'group'"),
    "ct-static-inputs": (_ct_config(FP8_WEIGHTS, {"num_bits": 8, "type": "float", "strategy": "tensor",
                                                  "symmetric": True, "dynamic": False}), r"static input_activations"),
    "ct-two-layouts": (_ct_config(FP8_WEIGHTS) | {"config_groups": {
        "group_0": {"targets": ["re:.*mlp.*"], "weights": FP8_WEIGHTS},
        "group_1": {"targets": ["re:.*self_attn.*"], "weights": {**FP8_WEIGHTS, "strategy": "block",
                                                                  "block_structure": [16, 32]}}}},
        r"config groups of different weight layouts"),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_a_scheme_we_cannot_read_is_refused_naming_it(case, tiny_llama, tmp_path):
    quantization, named = UNREADABLE[case]
    if case.startswith("ct-"):
        pytest.importorskip("compressed_tensors", reason="the extra mii-core[compressed-tensors] is not installed")
    path = _with_quantization_config(tiny_llama, tmp_path / case, quantization)
    with pytest.raises(ValueError, match=named) as raised:
        mii_core.pipeline(str(path), dtype="float32", inference_engine_config=ENGINE)
    assert "transformers' FP8" in str(raised.value) and "compressed-tensors' float8" in str(raised.value)


@pytest.fixture(scope="module")
def tiny_fp8(tiny_llama, tmp_path_factory) -> Path:
    return write_transformers_fp8(tiny_llama, tmp_path_factory.mktemp("fp8") / "ckpt", (16, 32), ["lm_head"])


@pytest.mark.parametrize("mode", ["fp8", "wf6af16"])
def test_a_quantization_mode_other_than_weight_only_fp8_is_refused_with_a_block_wise_checkpoint(mode, tiny_fp8):
    with pytest.raises(ValueError, match=rf"quantization_mode='{mode}' with .*shipped quantized \(quant_method "
                                         r"'fp8'\).*weight-only with quantization_mode unset \(or 'wf8af16'\); its "
                                         r"block-wise scales \(weight_block_size \[16, 32\]\) cannot feed 'fp8'"):
        mii_core.pipeline(str(tiny_fp8), dtype="float32", quantization_mode=mode, inference_engine_config=ENGINE)


def test_the_matching_mode_is_accepted_with_a_shipped_checkpoint(tiny_fp8):
    plain, _model = _greedy(tiny_fp8, _token_lists(tiny_fp8)[:1])
    assert _greedy(tiny_fp8, _token_lists(tiny_fp8)[:1], quantization_mode="wf8af16")[0] == plain


def test_block_wise_checkpoints_refuse_tensor_parallelism(tiny_fp8):
    from mii_core.loading.checkpoint import read_hf_config
    from mii_core.loading.prequantized import check_shipped_options, read_shipped_fp8

    shipped = read_shipped_fp8(read_hf_config(tiny_fp8), tiny_fp8)
    with pytest.raises(ValueError, match=r"tensor_parallel=2 .*block-wise scales \(weight_block_size \[16, 32\]\)"):
        check_shipped_options(shipped, None, 2, tiny_fp8)


def test_fp8_weights_without_their_scale_are_an_error(tiny_fp8, tmp_path):
    from safetensors.torch import save_file

    broken = shutil.copytree(tiny_fp8, tmp_path / "broken")
    for file in broken.glob("*.safetensors"):
        tensors = load_file(str(file))
        tensors.pop("model.layers.1.mlp.up_proj.weight_scale_inv")
        save_file(tensors, str(file), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"'model.layers.1.mlp.up_proj.weight' is stored in FP8 .* no scale tensor "
                                         r"'model.layers.1.mlp.up_proj.weight_scale_inv'"):
        mii_core.pipeline(str(broken), dtype="float32", inference_engine_config=ENGINE)


# ---- tensor parallelism: per-tensor and per-channel scales follow their rows; block-wise is refused above

def test_per_tensor_and_per_channel_checkpoints_split_over_two_ranks(tmp_path):
    """Rank 0's greedy tokens (2 ranks, gloo) equal the reference: each rank holds its rows' codes and scales
    (a row-parallel weight and an expert's down stack split their columns, keeping each row's scale)."""
    pytest.importorskip("compressed_tensors", reason="the extra mii-core[compressed-tensors] is not installed")
    from support.tp_launch import run_under_torchrun

    llama = arch.llama("gqa")(arch.folder_maker(tmp_path))[0]
    moe = arch.family("test_arch_qwen2_moe", "mixed")(arch.folder_maker(tmp_path))[0]
    cases = {  # name: (shipped checkpoint, scale suffix, its library's dequantization)
        "ct-channel": (write_compressed_tensors_fp8(llama, tmp_path / "ct", "channel", ["lm_head"]), "_scale",
                       compressed_tensors_dequantize("channel")),
        "fp8-per-tensor": (write_transformers_fp8(moe, tmp_path / "fp8", None, ["lm_head"]), "_scale_inv",
                           transformers_fp8_dequantize),
    }
    token_lists = {name: _token_lists(path) for name, (path, _, _) in cases.items()}
    jobs = [{"name": name, "path": str(path), "token_lists": token_lists[name], "max_new_tokens": NEW_TOKENS,
             "options": {"dtype": "float32"}} for name, (path, _, _) in cases.items()]
    rank0, _rank1 = run_under_torchrun(jobs, tmp_path)
    for name, (path, suffix, dequantize) in cases.items():
        folder, shipped_names = write_dequantized(path, tmp_path / f"{name}-reference", suffix, dequantize)
        assert len(shipped_names) > 4
        assert rank0[name]["generated"] == reference_greedy(folder, token_lists[name], NEW_TOKENS, "wf8af16", set()), name
