"""mii-core plugin for Qwen (v1) checkpoints (HF model_type "qwen", ``QWenLMHeadModel``)."""
