"""The benchmark's floor arithmetic (benchmarks/floors.py) against cases worked out by hand, and against
the W1 figures of shared/brief/performance.md (1,016 steps, 16.5 TB of KV reads, 37.7 GB of KV at the end)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import floors  # noqa: E402
import workloads  # noqa: E402

# 1 layer, 1 head of size 2, 1 byte per value: 4 KV bytes per token, 8 attention FLOP per key
UNIT = floors.Geometry(layers=1, heads=1, kv_heads=1, head_dim=2, dense_params=10, head_params=5, dtype_bytes=1)


def test_two_requests_by_hand():
    # prompts 3 and 2 tokens, outputs 2 and 1: one prefill step for both, then one decode step for the first
    f = floors.workload_floor(UNIT, [3, 2], [2, 1], matmul_flops=1, read_Bps=1)
    # prefill: 2*10*5 tokens + LM head 2*5*2 rows + keys (1+2+3)+(1+2)=9 at 8 FLOP; decode: 30 + 4 keys * 8
    assert f["compute_s"] == 100 + 20 + 72 + 30 + 32
    # weights (10 + 5 bytes) in each of 2 steps + the decode step reads 4 tokens of KV (16 bytes)
    assert f["memory_s"] == 15 + 15 + 16
    assert (f["steps"], f["floor_s"], f["bound"]) == (2, 254, "compute")
    assert f["output_tokens_per_s"] == 3 / 254


def test_shared_prefix_is_computed_and_read_once():
    # two prompts of 5 sharing their first 3 tokens, 3 new tokens each
    f = floors.workload_floor(UNIT, [5, 5], [3, 3], matmul_flops=1, read_Bps=1, shared_prefix_len=3)
    assert f["prefill_tokens"] == 7
    # prefill: 2*10*7 + 2*5*2 + keys (1+2+3) + 2*(4+5) = 24; decode: 4 tokens * 30 + keys 2*(6+7) = 26
    assert f["compute_s"] == 140 + 20 + 8 * 24 + 120 + 8 * 26
    # KV read per decode step: prefix 3 once + own 3 (then 4) per request -> 9 + 11 tokens, 4 bytes each
    assert f["kv_bytes_read"] == (9 + 11) * 4
    assert f["memory_s"] == 3 * 15 + 80


def test_sliding_window_caps_keys():
    assert floors.keys_attended(0, 5, window=2) == 1 + 2 + 2 + 2 + 2
    assert floors.keys_attended(3, 5) == 4 + 5
    assert floors.decode_kv_tokens([5, 1], 1, window=2) == 2 + 2


def test_moe_step_reads_only_reachable_experts():
    geo = floors.Geometry(layers=1, heads=1, kv_heads=1, head_dim=2, dense_params=10, head_params=5,
                          dtype_bytes=1, expert_params=40, experts=4, top_k=2)
    assert [geo.step_weight_bytes(n) for n in (1, 2, 100)] == [15 + 20, 15 + 40, 15 + 40]
    assert geo.active_params() == 10 + 20


def test_llama3_8b_geometry_and_brief_w1_figures():
    shape = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8)
    geo = floors.Geometry.from_config(shape, dtype_bytes=2)
    assert geo.kv_bytes_per_token == 131_072
    per_layer = 2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 4096 * 14336
    assert geo.streamed_weight_bytes == 2 * (32 * per_layer + 128256 * 4096)  # 15.01 GB
    w1 = workloads.make_w1(256, 128000)
    f = floors.workload_floor(geo, [len(p) for p in w1.prompts], w1.max_new_tokens, 743e12, 3.0e12)
    assert f["steps"] == 1016
    assert f["kv_bytes_read"] == pytest.approx(16.5e12, rel=0.01)
    assert f["kv_bytes_peak"] == pytest.approx(37.7e9, rel=0.01)
    assert f["bound"] == "memory"
    # the brief counts all 16.06 GB of weights per step (10.9 s); the embedding is only gathered, so 15.01
    assert f["memory_s"] == pytest.approx((1016 * 15.01e9 + 16.47e12) / 3.0e12, rel=0.002)


def test_quantized_weights_are_read_at_the_modes_bytes():
    # UNIT at 2 bytes per value: FP8 reads the 10 matmul weights at 1 byte, FP6 at 0.75; the LM head (5)
    # and the KV cache (8 bytes per token) keep 2
    bf16 = floors.Geometry(layers=1, heads=1, kv_heads=1, head_dim=2, dense_params=10, head_params=5, dtype_bytes=2)
    assert bf16.quantized(None) is bf16
    assert bf16.quantized("fp8").streamed_weight_bytes == 10 * 1 + 5 * 2
    assert bf16.quantized("wf6af16").step_weight_bytes(1) == 10 * 0.75 + 5 * 2
    f = floors.workload_floor(bf16.quantized("wf8af16"), [3, 2], [2, 1], matmul_flops=1e9, read_Bps=1)
    assert f["memory_s"] == 20 + 20 + 4 * 8  # weights in each of 2 steps + 4 tokens of KV in the decode step
