"""mii-core plugin for GPT-Neo checkpoints (HF model_type "gpt_neo")."""
