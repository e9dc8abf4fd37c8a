"""mii-core plugin for Qwen3 dense checkpoints (HF model_type "qwen3")."""
