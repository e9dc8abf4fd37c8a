"""Quantized models under tensor parallelism (2 ranks, gloo): each rank quantizes its own shard, so a
row-parallel weight (and an expert's down stack) gets one scale per row and rank; greedy output on rank 0
equals the transformers reference built with exactly those scales. Weight-only modes: "fp8"'s per-tensor
activation scale is taken per rank over its own columns of a row-parallel input."""
import pytest
from transformers import AutoTokenizer

import mii_core
from mii_core.engine.builder import load_policy
from mii_core.testing.parity import PROMPTS
from support import arch_checkpoints as arch
from support.quant_reference import quantized_targets, reference_greedy, row_parallel_targets, write_reference
from support.tp_launch import run_under_torchrun

NEW_TOKENS = 8
FAMILIES = {"llama": arch.llama("gqa"), "mixtral": arch.family("test_arch_mixtral", "full"),
            "qwen2_moe": arch.family("test_arch_qwen2_moe", "mixed")}
MODES = ("wf8af16", "wf6af16")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    jobs, cases = [], {}
    for family, build in FAMILIES.items():
        path, _reference = build(tmp_path_factory.mktemp)
        token_lists = [AutoTokenizer.from_pretrained(str(path))(PROMPTS[3])["input_ids"]]
        for mode in MODES:
            name = f"{family}/{mode}"
            cases[name] = (path, token_lists, mode)
            jobs.append({"name": name, "path": str(path), "token_lists": token_lists, "max_new_tokens": NEW_TOKENS,
                         "options": {"quantization_mode": mode, "dtype": "float32"}})
    ranks = run_under_torchrun(jobs, tmp_path_factory.mktemp("tp-quant-out"))
    return {name: (cases[name], [rank[name] for rank in ranks]) for name in cases}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_tensor_parallel_quantized_greedy_matches_reference(runs, family, mode, tmp_path):
    (path, token_lists, _), (rank0, _rank1) = runs[f"{family}/{mode}"]
    pipe = mii_core.pipeline(str(path), quantization_mode=mode, dtype="float32")  # one rank: the names
    try:
        quantized, split = quantized_targets(pipe.engine.model), row_parallel_targets(pipe.engine.model)
    finally:
        pipe.destroy()
    folder, _ = write_reference(path, tmp_path / "reference", load_policy(path), quantized, mode, split, ranks=2)
    assert rank0["generated"] == reference_greedy(folder, token_lists, NEW_TOKENS, mode, set())
