"""mii-core plugin for Falcon checkpoints (HF model_type "falcon"): 7B, 40B, 180B and the RW layout."""
