"""mii-core plugin for DeepSeek-V2 checkpoints (HF model_type "deepseek_v2")."""
