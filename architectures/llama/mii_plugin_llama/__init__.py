"""mii-core plugin for Llama, Llama-2 and Llama-3/3.1 checkpoints (HF model_type "llama")."""
