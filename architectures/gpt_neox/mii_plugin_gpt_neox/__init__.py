"""mii-core plugin for GPT-NeoX checkpoints: GPT-NeoX-20B, Pythia (HF model_type "gpt_neox")."""
