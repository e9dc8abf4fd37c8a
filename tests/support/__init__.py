"""Test helpers: the tiny-checkpoint builder, the HF oracle, prompts, comparisons."""
