"""mii-core plugin for Qwen2 and Qwen2.5 checkpoints (HF model_type "qwen2")."""
