"""benchmarks/profile_steps.py (the GPU session's per-step profiler) on the CPU at toy shapes: two families and
one quantization mode in one call, each run in its own process, every scenario in the JSON with a wall time
and non-negative categories; and the kernel-name rules against names cuBLAS, PyTorch and our Triton kernels
(kernels/mii_kernels/triton) really have."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))
from kernel_categories import CATEGORIES, IDLE, categorize  # noqa: E402

RUNS = ("llama:bf16", "qwen3_moe:bf16", "llama:fp8+fp8kv")
SCENARIOS = ("decode_b1", "decode_b8", "prefill")  # tiny W1 has 8 requests

NAMES = {
    # cuBLAS / cuBLASLt / CUTLASS, torch._scaled_mm (fp8), and ours: the GEMV and the weight-only fp8/fp6 GEMM
    "ampere_bf16_s16816gemm_bf16_128x64_ldg8_f2f_stages_64x3_tn": "gemm/linear",
    "nvjet_tst_128x64_64x8_1x2_h_bz_coopA_TNT": "gemm/linear",
    "sm90_xmma_gemm_e4m3bf16_e4m3f32_f32_tn_n_tilesize128x128x128_warpgroupsize1x1x1": "gemm/linear",
    "void cublasLt::splitKreduce_kernel<32, 16, int, float, __nv_bfloat16>(cublasLt::cublasSplitKParams<float>)":
        "gemm/linear",
    "_gemv_kernel": "gemm/linear", "_weight_only_kernel": "gemm/linear", "aten::mm": "gemm/linear",
    # our paged attention (prefill, split-key decode and its combine), other attention kernels
    "_prefill_kernel": "attention", "_decode_kernel": "attention", "_reduce_kernel": "attention",
    "_decode_kernel_0d1d2d3d4d5d6d7c": "attention",  # an older Triton's signature suffix
    "flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>>": "attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
    "_paged_attention_kernel": "attention",
    "_align_kernel": "moe", "_gate_up_kernel": "moe", "_down_kernel": "moe",
    "_count_kernel": "moe", "_offsets_kernel": "moe", "_scatter_kernel": "moe",
    "_rms_kernel": "norm", "_layer_kernel": "norm",
    "_rotary_write_kernel": "rotary+kv_write",
    "_quantize_kernel": "fp8_act_quantize", "_amax_kernel": "fp8_act_quantize",
    "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<c10::BFloat16, "
    "at::native::ArgMaxOps<c10::BFloat16>, unsigned int, long, 4> >": "sampling/logits",
    "void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float>": "sampling/logits",
    "void at::native::sbtopk::gatherTopK<float, unsigned int, 2, false>": "sampling/logits",
    "_gated_kernel": "elementwise/copy",
    "Memcpy HtoD (Pinned -> Device)": "elementwise/copy", "Memset (Device)": "elementwise/copy",
    "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, std::array<char*, 1ul> >":
        "elementwise/copy",
    "void at::native::(anonymous namespace)::indexSelectLargeIndex<c10::BFloat16, long, unsigned int, 2, 2, -2, true>":
        "elementwise/copy",
    # PyTorch's sum is a reduce_kernel too: not our attention's _reduce_kernel
    "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::func_wrapper_t<float, "
    "at::native::sum_functor<float, float, float> >, unsigned int, float, 4> >": "other",
}


def test_kernel_names_land_in_their_categories():
    assert {name: categorize(name) for name in NAMES} == NAMES


def test_every_triton_kernel_of_ours_has_a_named_category():
    """Every kernel launched as ``name[grid](...)`` under kernels/mii_kernels/triton is matched by a rule."""
    import re
    triton_dir = BENCH.parent / "kernels" / "mii_kernels" / "triton"
    launched = {m for path in triton_dir.glob("*.py") for m in re.findall(r"\b(_\w+_kernel)\[", path.read_text())}
    assert len(launched) >= 12, launched
    assert {name: categorize(name) for name in launched if categorize(name) == "other"} == {}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("profile_steps")
    out = tmp / "profile.json"
    command = [sys.executable, str(BENCH / "profile_steps.py"), "--tiny", "--runs", ",".join(RUNS),
               "--ckpt-dir", str(tmp / "ckpt"), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(out.read_text()), done.stdout, out.with_suffix(".txt").read_text()


def test_every_run_measures_every_scenario(tiny_run):
    res, _, _ = tiny_run
    assert list(res["runs"]) == list(RUNS)
    for label, run in res["runs"].items():
        assert run["status"] == "ok" and run["errors"] == {}, (label, run["errors"])
        assert list(run["scenarios"]) == list(SCENARIOS), label
    assert res["runs"]["llama:fp8+fp8kv"]["engine_kwargs"] == {"quantization_mode": "fp8",
                                                              "inference_engine_config": {"kv_cache_dtype": "fp8"}}


def test_scenario_figures_are_whole(tiny_run):
    res, _, _ = tiny_run
    for label, run in res["runs"].items():
        for name, sc in run["scenarios"].items():
            assert sc["wall_ms"] > 0 and sc["profiled_wall_ms"] > 0, (label, name)
            assert set(sc["categories_ms"]) == {*CATEGORIES, IDLE}
            assert all(v >= 0 for v in sc["categories_ms"].values()), (label, name, sc["categories_ms"])
            assert sc["categories_ms"]["gemm/linear"] > 0, (label, name)  # every step runs the linear layers
            assert sc["kernel_ms"] == pytest.approx(sum(v for k, v in sc["categories_ms"].items() if k != IDLE))
            assert sc["top_kernels"] and all(k["category"] == categorize(k["name"]) for k in sc["top_kernels"])
            assert sc["cuda_graph"] is False  # no graphs on the CPU
        assert run["scenarios"]["decode_b8"]["sequences"] == 8
        assert run["scenarios"]["prefill"]["new_tokens"] == 64  # W3's 4 tiny prompts of 16


def test_report_ends_with_one_line_a_step(tiny_run):
    _, stdout, text = tiny_run
    for label in RUNS:
        for name in SCENARIOS:
            assert f"| {label} | {name} |" in stdout and f"| {label} | {name} |" in text


def test_a_bad_run_name_is_refused():
    done = subprocess.run([sys.executable, str(BENCH / "profile_steps.py"), "--tiny", "--runs", "llama:int4"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "FAMILY:WEIGHTS" in done.stderr
