"""The start-up warm-up (run on GPUs before the CUDA graphs are captured) on every architecture: it must
stay inside the model's limits (a learned position table ends at max_position_embeddings: OPT and GPT-2
hit a device-side assert on the H100 when it did not), leave no state behind, and change no output."""

import pytest

import support.arch_checkpoints as checkpoints
from support.prompts import MIXED_PROMPTS

NEW_TOKENS = 8
ARCHITECTURES = {
    "llama": checkpoints.llama("gqa"),
    "mistral-window": checkpoints.family("test_arch_mistral", "window"),
    "mixtral": checkpoints.family("test_arch_mixtral", "full"),
    "qwen2": checkpoints.family("test_arch_qwen2", "tied"),
    "qwen-v1": checkpoints.qwen_v1,
    "falcon-7b": checkpoints.family("test_arch_falcon", "7b"),
    "phi-2": checkpoints.family("test_arch_phi", "phi2"),
    "opt-350m": checkpoints.family("test_arch_opt", "350m"),
    "bloom": checkpoints.family("test_arch_bloom", "6-heads"),
    "mpt": checkpoints.family("test_arch_mpt", "clip"),
    "starcoder2-window": checkpoints.family("test_arch_starcoder2", "window"),
    "phi3-longrope": checkpoints.family("test_arch_phi3", "longrope"),
    "qwen2-moe-mixed": checkpoints.family("test_arch_qwen2_moe", "mixed"),
    "qwen3-moe-mixed": checkpoints.family("test_arch_qwen3_moe", "mixed"),
    "gemma3-pattern": checkpoints.family("test_arch_gemma3_text", "pattern"),
    "deepseek-v2-yarn": checkpoints.family("test_arch_deepseek_v2", "yarn-bias"),
    "gpt2-kit": checkpoints.gpt2_kit,
    "gptj": checkpoints.family("test_arch_gptj", "partial"),
    "gpt-neo": checkpoints.family("test_arch_gpt_neo", "alternating"),
}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_warm_up_stays_inside_the_model_and_changes_nothing(name, tmp_path_factory, oracle, pipeline):
    ours, reference = ARCHITECTURES[name](tmp_path_factory.mktemp)
    references = [oracle(reference).greedy(p, NEW_TOKENS, ignore_eos=True) for p in MIXED_PROMPTS[:3]]
    pipe = pipeline(ours)
    limit = pipe.spec.max_position_embeddings
    assert pipe.config.inference_engine_config.state_manager.max_context > limit or limit > 4096, \
        "the engine's max_context alone would not keep this warm-up inside the model"
    pipe.engine.warm_up(limit)
    assert not pipe.engine.scheduler.kv.sequences, "the warm-up's sequences must be flushed"
    # token ids in and out: Qwen v1's own tokenizer differs from the HF Qwen2 oracle's
    outputs = pipe.generate_tokens([list(g.prompt_ids) for g in references], max_new_tokens=NEW_TOKENS,
                                   do_sample=False, ignore_eos=True)
    assert [list(o.token_ids) for o in outputs] == [list(g.new_ids) for g in references]


def test_the_warm_up_runs_a_decode_beside_a_prompt_in_a_few_tokens_and_in_more(tmp_path_factory, pipeline,
                                                                                 monkeypatch):
    """A busy workload's mixed steps hold more tokens than the few-token paths take, and their kernels differ
    (mode fp8: the attention joins its output's absmax there): the warm-up must run such a step too, or the
    first one compiles inside a timed run. A step is recorded as its (uid, new tokens, a decode?) rows."""
    from mii_core.model.quantization import FP8_WEIGHT_ONLY_MAX_TOKENS

    ours, _ = ARCHITECTURES["llama"](tmp_path_factory.mktemp)
    pipe = pipeline(ours)
    engine, steps, seen = pipe.engine, [], set()
    put = engine.put

    def recording(uids, tokens):
        steps.append([(len(t), uid in seen) for uid, t in zip(uids, tokens)])
        seen.update(uids)
        return put(uids, tokens)

    monkeypatch.setattr(engine, "put", recording)
    engine.warm_up(pipe.spec.max_position_embeddings)
    mixed = [sum(n for n, _ in step) for step in steps
             if any(n == 1 and old for n, old in step) and any(n > 1 for n, _ in step)]
    assert any(total <= FP8_WEIGHT_ONLY_MAX_TOKENS for total in mixed), steps
    assert any(total > FP8_WEIGHT_ONLY_MAX_TOKENS for total in mixed), steps
    assert not engine.scheduler.kv.sequences, "the warm-up's sequences must be flushed"
