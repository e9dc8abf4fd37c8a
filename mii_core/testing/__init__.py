"""What a plugin author needs to test a family against transformers, without copying our test recipe.

    from transformers import StableLmConfig, StableLmForCausalLM
    from mii_core.testing import SCHEDULES, assert_greedy_matches_hf, build_tiny_checkpoint

    path = build_tiny_checkpoint(tmp_path / "tiny", StableLmForCausalLM,
                                 StableLmConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                num_attention_heads=4, num_key_value_heads=4), seed=0)
    for schedule in SCHEDULES:
        assert_greedy_matches_hf(path, schedule)

``build_tiny_checkpoint`` writes a tiny random checkpoint of any HF causal-LM class with a BPE tokenizer
trained on a built-in English corpus (nothing is downloaded), its weights "loud" so that greedy choices are
far apart; ``assert_greedy_matches_hf`` runs transformers' greedy ``generate`` on each prompt alone and our
pipeline on all of them in one batch, scheduled whole, in small prompt chunks, in a KV cache too small for
the batch (preempted and recomputed) or twice over a prefix cache, and compares the tokens. Needs
``transformers`` and ``tokenizers`` (both installed with mii-core) and imports torch: test code only.
"""
from mii_core.testing.parity import (PROMPTS, SCHEDULES, assert_greedy_matches_hf, hf_greedy_ids,
                                     schedule_options)
from mii_core.testing.tiny import CORPUS, build_tiny_checkpoint, train_tokenizer

__all__ = ["CORPUS", "PROMPTS", "SCHEDULES", "assert_greedy_matches_hf", "build_tiny_checkpoint", "hf_greedy_ids",
           "schedule_options", "train_tokenizer"]
