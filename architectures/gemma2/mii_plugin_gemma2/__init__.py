"""mii-core plugin for Gemma 2 checkpoints (HF model_type "gemma2")."""
