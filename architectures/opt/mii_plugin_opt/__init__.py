"""mii-core plugin for OPT checkpoints (HF model_type "opt": OPT-125M to OPT-66B)."""
