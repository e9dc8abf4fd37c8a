"""mii-core plugin for Phi-3 / Phi-3.5 checkpoints (HF model_type "phi3")."""
