"""mii-core plugin for Gemma 3 language-model checkpoints (HF model_type "gemma3_text")."""
