"""The benchmark's family rows (issue 17): a random checkpoint of a real model's shape per family, W1 through
mii-core beside HF generate, the row's floor. Pure data (no torch): the runner and the report read it too.

Each shape keeps the real model's names (HF's config class takes them as they are) and puts two special ids
at the top of the vocabulary, like the Llama shape (checkpoint.py): workloads draw ids below ``bos_token_id``.
"""
from dataclasses import dataclass

# Qwen3-30B-A3B: 128 experts of 768, top-8, 32 q heads / 4 kv heads of 128 (head_dim is not hidden / heads).
# 12 of its 48 layers: 8.1e9 params, 16.2 GB in bf16, about the Llama shape's size, so that the build, both
# start-ups and W1 fit one section of a 10-minute device call; every layer is sparse, as in the real model.
QWEN3_MOE_12L = dict(
    vocab_size=151936, hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768, num_hidden_layers=12,
    num_attention_heads=32, num_key_value_heads=4, head_dim=128, num_experts=128, num_experts_per_tok=8,
    norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[], max_position_embeddings=40960,
    rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=151934, eos_token_id=151935,
)
# Gemma-2-9B whole: 42 layers, every other one (0, 2, ...) windowed to 4,096 keys, soft-caps 50 (attention)
# and 30 (logits), tied embeddings; 9.24e9 params, 18.5 GB in bf16.
GEMMA2_9B = dict(
    vocab_size=256000, hidden_size=3584, intermediate_size=14336, num_hidden_layers=42, num_attention_heads=16,
    num_key_value_heads=8, head_dim=256, sliding_window=4096, attn_logit_softcapping=50.0,
    final_logit_softcapping=30.0, query_pre_attn_scalar=256, hidden_activation="gelu_pytorch_tanh",
    max_position_embeddings=8192, rms_norm_eps=1e-6, tie_word_embeddings=True,
    bos_token_id=255998, eos_token_id=255999, pad_token_id=255999,
)
# float32 toys for the CPU: the same features (experts with head_dim apart from hidden / heads; a window
# tiny W1's sequences, up to 35 tokens, run past on the windowed layer)
TINY_QWEN3_MOE = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_experts=8, num_experts_per_tok=2,
    norm_topk_prob=True, max_position_embeddings=256, tie_word_embeddings=False, bos_token_id=510, eos_token_id=511,
)
TINY_GEMMA2 = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=32, sliding_window=16, attn_logit_softcapping=50.0,
    final_logit_softcapping=30.0, query_pre_attn_scalar=32, max_position_embeddings=256,
    tie_word_embeddings=True, bos_token_id=510, eos_token_id=511, pad_token_id=511,
)


@dataclass(frozen=True)
class Family:
    name: str  # the section, the figure keys' middle ("ours.<name>_W1") and the results' checkpoint key
    model_type: str  # what a mii-core plugin must serve for our engine to run it
    hf_classes: tuple  # (config class, model class) in transformers
    shape: dict
    tiny_shape: dict
    label: str  # the report's row
    ckpt: str  # default checkpoint folder (tiny: with "-tiny")

    def figure(self, system):
        return f"{system}.{self.name}_W1"

    @property
    def floor_key(self):
        return f"{self.name.upper()}_W1"

    def path(self, tiny):
        return f"{self.ckpt}-tiny" if tiny else self.ckpt


FAMILIES = {
    f.name: f for f in (
        Family("qwen3_moe", "qwen3_moe", ("Qwen3MoeConfig", "Qwen3MoeForCausalLM"), QWEN3_MOE_12L, TINY_QWEN3_MOE,
               "Qwen3-MoE-shaped W1", "/tmp/qwen3-moe-12l-random"),
        Family("gemma2", "gemma2", ("Gemma2Config", "Gemma2ForCausalLM"), GEMMA2_9B, TINY_GEMMA2,
               "Gemma-2-9B-shaped W1", "/tmp/gemma2-9b-random"),
    )
}
