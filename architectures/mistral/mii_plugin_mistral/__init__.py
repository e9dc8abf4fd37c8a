"""mii-core plugin for Mistral checkpoints (HF model_type "mistral")."""
