"""mii-core plugin for Gemma (1) checkpoints (HF model_type "gemma")."""
