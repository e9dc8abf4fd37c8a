"""benchmarks/kernel_bench_ops.py's MoE rows (the GPU run times them; here their wiring is checked on the CPU,
the Triton kernels under the interpreter): each named launch config reaches the op and gives the reference's
result, its row is labelled by the config, and the bytes a row's bandwidth is worked out from are the shape's."""
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="triton comes with mii-kernels on Linux only")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import kernel_bench_ops as bench  # noqa: E402
from mii_kernels.triton import moe  # noqa: E402


@pytest.fixture
def on_cpu(monkeypatch):
    monkeypatch.setattr(bench, "DEVICE", "cpu")
    monkeypatch.setattr(bench, "DTYPE", torch.float32)
    monkeypatch.setattr(bench, "time_ms", lambda fn, graph: (fn(), (2.0, ""))[1])  # runs the op once, no timer


@pytest.mark.parametrize("name", sorted(moe.CONFIGS))
def test_each_moe_config_is_a_row_of_its_own_and_right(on_cpu, name):
    row = bench.run_case("moe_experts", 40, False, "tiny", name)
    assert row["op"] == f"moe_experts[{name}]" and row["max_rel_diff"] < 1e-5


def test_moe_rows_count_the_weights_of_the_experts_used(on_cpu):
    torch.manual_seed(0)
    args, _, moved, flops = bench.build("moe_experts", 40, "tiny")
    hidden, _, ffn, top_k = bench.MOE_SHAPES["tiny"]
    used = args[2].unique().numel()
    # every used expert's gate, up and down once, x in and out; 4 bytes a float32
    assert moved == (used * 3 * ffn * hidden + 2 * 40 * hidden) * 4
    assert flops == 2.0 * 40 * top_k * 3 * ffn * hidden


def test_the_options_name_shape_and_configs():
    args = bench.parse_args(["--ops", "moe_experts", "--moe-shape", "qwen3_moe", "--moe-configs", "default,per_expert"])
    assert args.moe_shape == "qwen3_moe" and args.moe_configs == ["default", "per_expert"]
    assert bench.MOE_SHAPES["qwen3_moe"] == (2048, 128, 768, 8)  # Qwen3-30B-A3B's config.json


@pytest.mark.parametrize("mode", ["fp8", "wf6af16"])
def test_quantized_moe_rows_run_the_quantized_experts(on_cpu, mode):
    """40 tokens: mode fp8 takes the FP8-activation path; the row is labelled by the mode and equals the
    dequantizing reference, and its bytes are the codes' (1 byte a weight for FP8, 3/4 for FP6)."""
    row = bench.run_case("moe_experts", 40, False, "tiny", "default", mode)
    assert row["op"] == f"moe_experts/{mode}[default]" and row["max_rel_diff"] < 1e-5
    torch.manual_seed(0)
    args, _, moved, _ = bench.build("moe_experts", 40, "tiny", mode)
    hidden, _, ffn, _ = bench.MOE_SHAPES["tiny"]
    assert args[3].mode == mode
    assert moved == args[2].unique().numel() * 3 * ffn * hidden * {"fp8": 1.0, "wf6af16": 0.75}[mode] + 2 * 40 * hidden * 4


@pytest.mark.parametrize("op", ["rms_norm", "gated_activation"])
def test_amax_rows_time_the_join_and_check_it_against_the_reference(on_cpu, op):
    """--amax: the row is labelled op+amax, and its difference counts the kernel's absmax against the reference's
    (an absmax left unjoined, zero, is a whole difference)."""
    row = bench.run_case(op, 2, False, amax=True)
    assert row["op"] == f"{op}+amax" and row["max_rel_diff"] < 1e-6
    real, reference = bench.implementations(op)
    ours_ignoring_amax = lambda *a, amax=None, **k: real(*a, **k)  # noqa: E731
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench, "implementations", lambda *a: (ours_ignoring_amax, reference))
        assert bench.run_case(op, 2, False, amax=True)["max_rel_diff"] == 1.0


@pytest.mark.parametrize("op, width", [("fp8_quantize", 4096), ("fp8_quantize/ffn", 14336)])
def test_fp8_quantize_rows_give_the_contract_codes(on_cpu, op, width):
    torch.manual_seed(0)
    args, _, moved, _ = bench.build(op, 3)
    assert args[0].shape == (3, width) and moved == 3 * width * (2 * 4 + 1)  # float32 read twice, codes written
    assert bench.run_case(op, 3, False)["max_rel_diff"] == 0.0
