"""mii-core plugin for Qwen3-MoE checkpoints (HF model_type "qwen3_moe")."""
