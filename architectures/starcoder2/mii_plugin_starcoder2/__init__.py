"""mii-core plugin for StarCoder2 checkpoints: 3B, 7B, 15B (HF model_type "starcoder2")."""
