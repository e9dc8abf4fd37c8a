"""mii-core plugin for Phi checkpoints (HF model_type "phi": Phi-1, Phi-1.5, Phi-2)."""
