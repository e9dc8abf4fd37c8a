"""mii-core plugin for Mixtral checkpoints (HF model_type "mixtral")."""
