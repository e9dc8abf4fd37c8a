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


def test_moe_step_reads_the_experts_a_balanced_router_reaches():
    # 4 experts of 10 bytes, top-2: one token reads 2 of them; two tokens leave a given expert unread with
    # probability (1/2)^2, so 4 x 3/4 = 3 are read on average (not 4); 100 tokens read all 4
    geo = floors.Geometry(layers=1, heads=1, kv_heads=1, head_dim=2, dense_params=10, head_params=5,
                          dtype_bytes=1, expert_params=40, experts=4, top_k=2)
    assert [geo.experts_reached(n) for n in (1, 2)] == [2, 3]
    assert [geo.step_weight_bytes(n) for n in (1, 2)] == [15 + 20, 15 + 30]
    assert geo.step_weight_bytes(100) == pytest.approx(15 + 40, abs=1e-12)
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
    # UNIT at 2 bytes per value: FP8 reads the 10 matmul weights at 1 byte, FP6 at 0.75, and so an LM head of
    # its own (5); a head tied to the embedding and the KV cache (8 bytes per token) keep 2
    bf16 = floors.Geometry(layers=1, heads=1, kv_heads=1, head_dim=2, dense_params=10, head_params=5, dtype_bytes=2)
    tied = floors.Geometry(layers=1, heads=1, kv_heads=1, head_dim=2, dense_params=10, head_params=5, dtype_bytes=2,
                           head_tied=True)
    assert bf16.quantized(None) is bf16 and bf16.streamed_weight_bytes == 10 * 2 + 5 * 2
    assert bf16.quantized("fp8").streamed_weight_bytes == 10 * 1 + 5 * 1
    assert tied.quantized("fp8").streamed_weight_bytes == 10 * 1 + 5 * 2
    assert bf16.quantized("wf6af16").step_weight_bytes(1) == 10 * 0.75 + 5 * 0.75
    f = floors.workload_floor(tied.quantized("wf8af16"), [3, 2], [2, 1], matmul_flops=1e9, read_Bps=1)
    assert f["memory_s"] == 20 + 20 + 4 * 8  # weights in each of 2 steps + 4 tokens of KV in the decode step


def test_a_configs_head_is_tied_unless_it_says_otherwise():
    shape = dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, vocab_size=10)
    assert floors.Geometry.from_config(shape, dtype_bytes=2).head_tied  # transformers' default
    assert not floors.Geometry.from_config({**shape, "tie_word_embeddings": False}, dtype_bytes=2).head_tied


def test_windowed_and_full_layers_by_hand():
    # 2 layers of UNIT's attention (K and V of 1 head of 2 at 1 byte: 4 bytes per token and layer);
    # layer 1 sees the last 2 keys; one request: prompt 3, output 3 (prefill, then decode at positions 3, 4)
    geo = floors.Geometry(layers=2, heads=1, kv_heads=1, head_dim=2, dense_params=10, head_params=5, dtype_bytes=1,
                          sliding_window=2, sliding_layers=1)
    assert geo.layer_windows() == ((1, 0), (1, 2))
    f = floors.workload_floor(geo, [3], [3], matmul_flops=1, read_Bps=1)
    # keys: prefill 1+2+3 (full) + 1+2+2 (window) = 11, decode 4+5 + 2+2 = 13; 8 FLOP per key and layer
    assert f["attention_flops"] == 8 * (11 + 13)
    assert f["compute_s"] == (2 * 10 * 3 + 2 * 5 + 8 * 11) + ((2 * 10 + 2 * 5) * 2 + 8 * 13)
    # decode step 1 reads 4 keys in the full layer and 2 in the windowed one, step 2 reads 5 and 2; 4 bytes each
    assert f["kv_bytes_read"] == (4 + 2 + 5 + 2) * 4
    assert f["memory_s"] == 3 * 15 + 52


def test_windows_and_sparse_layers_from_config():
    base = dict(hidden_size=4, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1, head_dim=2,
                intermediate_size=6, vocab_size=10)
    gemma = floors.Geometry.from_config(dict(base, sliding_window=8, layer_types=["sliding_attention",
                                             "full_attention"] * 2), 2)
    assert gemma.layer_windows() == ((2, 0), (2, 8))
    assert floors.Geometry.from_config(dict(base, sliding_window=8), 2).layer_windows() == ((4, 8),)  # Mistral
    assert floors.Geometry.from_config(dict(base, sliding_window=8, use_sliding_window=False), 2).layer_windows() \
        == ((4, 0),)  # Qwen keeps an unused window size
    # Qwen-MoE: layer 0 dense (mlp_only_layers), sparse only where (i + 1) % 2 == 0: layers 1 and 3; 3 experts
    # of 5, top-1, a shared expert of 7 with its 1-wide gate
    qwen = floors.Geometry.from_config(dict(base, num_experts=3, num_experts_per_tok=1, moe_intermediate_size=5,
                                            mlp_only_layers=[0], decoder_sparse_step=2,
                                            shared_expert_intermediate_size=7), 2)
    attn = 4 * 2 * 2 * 2 + 4 * 1 * 2 * 2  # q and o (2 heads of 2), k and v (1 head of 2)
    assert qwen.dense_params == 4 * attn + 2 * (4 * 3 + 3 * 4 * 7 + 4) + 2 * 3 * 4 * 6
    assert qwen.expert_params == 2 * 3 * 3 * 4 * 5
    assert (qwen.experts, qwen.top_k) == (3, 1)


def test_qwen3_moe_row_geometry_by_hand():
    import families
    geo = floors.Geometry.from_config(families.QWEN3_MOE_12L, dtype_bytes=2)
    attn = 2048 * 4096 * 2 + 2048 * 512 * 2  # 32 q heads and 4 kv heads of 128 over hidden 2048
    assert geo.dense_params == 12 * (attn + 2048 * 128)  # attention and the router; no dense MLP
    assert geo.expert_params == 12 * 128 * 3 * 2048 * 768
    assert geo.streamed_weight_bytes == 2 * (12 * (18_874_368 + 262_144 + 603_979_776) + 151_936 * 2048)  # 15.6 GB
    assert geo.active_params() == 12 * (18_874_368 + 262_144) + 12 * 8 * 3 * 2048 * 768
    assert geo.kv_bytes_per_token == 2 * 12 * 4 * 128 * 2
    # 16 tokens leave an expert unread with probability (120/128)^16 = 0.3561: 82.4 of 128 read
    assert geo.experts_reached(16) == pytest.approx(82.42, abs=0.01)
    assert geo.experts_reached(256) == pytest.approx(128, abs=1e-5)


def test_gemma2_9b_row_geometry_and_w1_by_hand():
    import families
    geo = floors.Geometry.from_config(dict(families.GEMMA2_9B, layer_types=["sliding_attention",
                                                                          "full_attention"] * 21), dtype_bytes=2)
    per_layer = 3584 * 4096 * 2 + 3584 * 2048 * 2 + 3 * 3584 * 14336  # 16 q heads and 8 kv heads of 256
    assert geo.streamed_weight_bytes == 2 * (42 * per_layer + 256_000 * 3584) == 18_482_200_576  # tied head read
    assert geo.kv_bytes_per_token == 2 * 42 * 8 * 256 * 2 == 344_064
    assert geo.layer_windows() == ((21, 0), (21, 4096))
    # W1's sequences end below 2,048 tokens, under the 4,096 window: every layer reads all its keys, so the
    # KV read is the Llama shape's (16.5 TB at 131,072 bytes per token, test above) at 344,064 bytes per token
    w1 = workloads.make_w1(256, 255998)
    f = floors.workload_floor(geo, [len(p) for p in w1.prompts], w1.max_new_tokens, 989e12, 4.8e12)
    assert f["steps"] == 1016
    assert f["kv_bytes_read"] == pytest.approx(16.47e12 * 344_064 / 131_072, rel=0.005)
    assert f["memory_s"] == pytest.approx((1016 * 18.4822e9 + 16.47e12 * 344_064 / 131_072) / 4.8e12, rel=0.005)
    assert f["bound"] == "memory"
