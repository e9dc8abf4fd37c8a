"""mii-core plugin for MPT checkpoints: MPT-7B, MPT-30B and their tunes (HF model_type "mpt")."""
