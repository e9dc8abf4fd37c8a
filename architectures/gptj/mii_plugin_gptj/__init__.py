"""mii-core plugin for GPT-J checkpoints (HF model_type "gptj")."""
