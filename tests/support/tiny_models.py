"""Build a tiny random checkpoint of any HF causal-LM family: ``mii_core.testing.build_tiny_checkpoint``
(public, for plugin authors too), re-exported where the tests have always imported it.

    build_tiny_checkpoint(folder, MistralForCausalLM, MistralConfig(...), seed=0)
"""
from mii_core.testing.tiny import build_tiny_checkpoint, scale_output_embeddings

__all__ = ["build_tiny_checkpoint", "scale_output_embeddings"]
