"""mii-core plugin for Qwen1.5-MoE / Qwen2-MoE checkpoints (HF model_type "qwen2_moe")."""
