"""GPT-2 for mii-core (HF model_type "gpt2")."""
