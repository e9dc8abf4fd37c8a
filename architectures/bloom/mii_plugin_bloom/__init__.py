"""mii-core plugin for Bloom checkpoints: BLOOM 560m to 176B, BLOOMZ (HF model_type "bloom")."""
