"""Qwen (v1), model_type "qwen": greedy parity with HF Qwen2 on the same weights converted to the v1 layout
(transformers has no Qwen v1), and Qwen's long-context rules (dynamic NTK, logn attention) against a
hand-written PyTorch Qwen v1 past ``seq_length``. The tiktoken tokenizer is in test_arch_qwen_tokenizer.py."""

import json
import math

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from support.compare import assert_responses_match
from support.oracle import MIN_GREEDY_MARGIN, HFOracle
from support.prompts import MIXED_PROMPTS
from support.qwen_reference import QwenV1Reference, get_ntk_alpha, rotary_tables
from support.qwen_v1 import build_tiny_qwen2, convert_to_qwen_v1
from test_scheduling import BLOCK_SIZE, tight_kv_config

NEW_TOKENS = 20
SEED = 0
SHORT_SEQ_LENGTH = 8  # Qwen's trained length in the long-context tests: the prompts run far past it
LOGITS_TOLERANCE = 1e-4
SCHEDULES = {
    "one_step": {},
    "chunked": {"state_manager": {"max_ragged_batch_size": 8, "max_ragged_sequence_count": 8}},
}


def hf_oracle(path) -> HFOracle:
    """HF Qwen2 on the original folder. Its tokenizer is loaded as the generic fast tokenizer: for a
    qwen2 folder transformers v5's AutoTokenizer rebuilds Qwen2's own pre-tokenizer around the shared
    test vocabulary, which is not the tokenizer the folder holds (nor the one our pipeline loads)."""
    oracle = HFOracle(path)
    oracle.tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path))
    return oracle


@pytest.fixture(scope="module")
def qwen2_folder(tmp_path_factory):
    return build_tiny_qwen2(tmp_path_factory.mktemp("qwen2"), seed=SEED)


@pytest.fixture(scope="module")
def hf(qwen2_folder):
    return hf_oracle(qwen2_folder)


@pytest.fixture(scope="module")
def v1_folder(qwen2_folder, tmp_path_factory):
    """As real Qwen configs: NTK and logn on, with a seq_length no test prompt reaches."""
    return convert_to_qwen_v1(qwen2_folder, tmp_path_factory.mktemp("qwen-v1"), seq_length=2048)


@pytest.fixture(scope="module")
def convert(qwen2_folder, tmp_path_factory):
    made = {}

    def get(**options):
        key = tuple(sorted(options.items()))
        if key not in made:
            made[key] = convert_to_qwen_v1(qwen2_folder, tmp_path_factory.mktemp("qwen-v1-long"), **options)
        return made[key]

    return get


def test_v1_layout_holds_fused_qkv_and_w1_w2(v1_folder):
    """The fixture is what a QWenLMHeadModel checkpoint holds (so the parity below tests the v1 mapping)."""
    from safetensors import safe_open

    with safe_open(str(v1_folder / "model.safetensors"), framework="pt") as handle:
        shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    assert shapes["transformer.h.0.attn.c_attn.weight"] == (3 * 64, 64)
    assert shapes["transformer.h.0.attn.c_attn.bias"] == (3 * 64,)
    assert shapes["transformer.h.1.mlp.w1.weight"] == shapes["transformer.h.1.mlp.w2.weight"] == (128, 64)
    assert not any(name.startswith("model.") for name in shapes)
    config = json.loads((v1_folder / "config.json").read_text())
    assert (config["model_type"], config["intermediate_size"], config["kv_channels"]) == ("qwen", 256, 16)


@pytest.mark.parametrize("schedule", ["one_step", "chunked", "preempted"])
def test_mixed_batch_greedy_matches_hf_qwen2(v1_folder, hf, qwen2_folder, pipeline, schedule):
    references = [hf.greedy(p, NEW_TOKENS, ignore_eos=True) for p in MIXED_PROMPTS]
    if schedule == "preempted":
        config, n_blocks = tight_kv_config(lambda _path: hf, qwen2_folder, MIXED_PROMPTS, NEW_TOKENS)
        needed = sum(math.ceil((g.prompt_length + NEW_TOKENS) / BLOCK_SIZE) for g in references)
        assert needed > n_blocks, "the batch must not fit in the KV cache at once"
    else:
        config = SCHEDULES[schedule]
    pipe = pipeline(v1_folder, inference_engine_config=config)
    responses = pipe(MIXED_PROMPTS, do_sample=False, max_new_tokens=NEW_TOKENS, ignore_eos=True)
    assert_responses_match(responses, references)


def test_ntk_alpha_worked_by_hand():
    """Qwen's alpha, 2 ** ceil(log2(L / seq_length) + 1) - 1 and at least 1, for seq_length 16, by hand:
    16 -> ceil(1) = 1 -> 1; 17 -> ceil(1.09) = 2 -> 3; 32 -> ceil(2) = 2 -> 3; 33 -> ceil(2.04) = 3 -> 7."""
    from mii_plugin_qwen.rotary import stepped_ntk_alpha

    by_hand = {1: 1, 8: 1, 16: 1, 17: 3, 32: 3, 33: 7, 64: 7, 65: 15, 128: 15, 129: 31}
    assert {n: get_ntk_alpha(n, 16) for n in by_hand} == by_hand  # the reference's formula
    ours = stepped_ntk_alpha(torch.tensor(list(by_hand)), 16)
    assert dict(zip(by_hand, ours.tolist())) == by_hand


@pytest.mark.parametrize("seq_length", [16, 2048, 8192])
def test_ntk_alpha_steps_where_qwens_python_arithmetic_steps(seq_length):
    """modeling_qwen.py computes the alpha with math.log in float64: ours steps on exactly the same lengths."""
    from mii_plugin_qwen.rotary import stepped_ntk_alpha

    lengths = list(range(1, 8 * seq_length + 2))
    ours = stepped_ntk_alpha(torch.tensor(lengths), seq_length).tolist()
    assert ours == [get_ntk_alpha(n, seq_length) for n in lengths]


def test_qwen_dynamic_rope_tables_take_the_alpha_of_the_prompt():
    """Per token: Qwen's RotaryEmbedding tables for the alpha of its sequence's prompt length, whatever
    the token's position (generated tokens past the prompt keep it), through a ragged batch of chunks."""
    from mii_core.batch import build_ragged_batch
    from mii_core.model.spec import RopeSpec
    from mii_plugin_qwen.rotary import QwenRotaryEmbedding

    trained, dim, theta = 16, 12, 10000.0
    spec = RopeSpec(theta=theta, rope_type="qwen_dynamic", params={"original_max_position_embeddings": trained})
    rotary = QwenRotaryEmbedding(spec, dim, 4096, torch.device("cpu"))
    # (prompt length, tokens cached, new tokens): a short prompt generating past seq_length, a prompt chunk,
    # a long prompt's generated token, a recomputed prompt + output after a preemption
    seqs = [(10, 30, 1), (33, 8, 12), (20, 90, 1), (17, 0, 40)]
    batch = build_ragged_batch([[0] * new for _, _, new in seqs], [seen for _, seen, _ in seqs],
                               [list(range(40))] * len(seqs), 4, torch.device("cpu"),
                               prompt_lens=[prompt for prompt, _, _ in seqs])
    cos, sin = rotary.tables(batch, torch.float32)
    alphas = {prompt: get_ntk_alpha(prompt, trained) for prompt, _, _ in seqs}
    assert alphas == {10: 1, 33: 7, 20: 3, 17: 3}, "worked by hand: 2^ceil(log2(L/16)+1)-1"
    row = 0
    for prompt, seen, new in seqs:
        want_cos, want_sin = rotary_tables(dim, theta, seen + new, alphas[prompt])
        for position in range(seen, seen + new):
            torch.testing.assert_close(cos[row], want_cos[position], atol=2e-6, rtol=0)
            torch.testing.assert_close(sin[row], want_sin[position], atol=2e-6, rtol=0)
            row += 1
    assert row == cos.shape[0]


LONG_VARIANTS = {
    "ntk+logn": dict(use_dynamic_ntk=True, use_logn_attn=True),
    "ntk": dict(use_dynamic_ntk=True, use_logn_attn=False),
    "logn": dict(use_dynamic_ntk=False, use_logn_attn=True),
    "ntk+logn, rotary_pct 0.5": dict(use_dynamic_ntk=True, use_logn_attn=True, rotary_pct=0.5),
}


@pytest.mark.parametrize("variant", list(LONG_VARIANTS))
def test_past_seq_length_logits_match_qwen_reference(convert, hf, pipeline, variant):
    """An 81-token prompt (alpha 31 for seq_length 8; logn up to log_8(81)) put in chunks, then 10 tokens
    one at a time that keep the prompt's alpha, against the reference; the reference itself agrees with
    HF Qwen2 within seq_length and not past it (so the flags are live)."""
    folder = convert(seq_length=SHORT_SEQ_LENGTH, **LONG_VARIANTS[variant])
    ids = hf.encode(MIXED_PROMPTS[5])
    prompt, continuation = ids[:-10], ids[-10:]
    reference = QwenV1Reference(folder)
    if "rotary_pct" not in LONG_VARIANTS[variant]:
        with torch.no_grad():
            plain = hf.model(torch.tensor([prompt])).logits[0]
        within = reference.logits(prompt[:SHORT_SEQ_LENGTH])
        torch.testing.assert_close(within, plain[:SHORT_SEQ_LENGTH], atol=LOGITS_TOLERANCE, rtol=0)
        past = reference.logits(prompt)[SHORT_SEQ_LENGTH:] - plain[SHORT_SEQ_LENGTH:]
        assert past.abs().amax(-1).min() > 0.01
    expected_prompt = reference.logits(prompt)
    expected_steps = [reference.step(t) for t in continuation]
    engine = pipeline(folder).engine
    ends = [5, 30, 31, 55, len(prompt)]
    try:
        for start, end in zip([0] + ends, ends):
            logits = engine.put([7], [prompt[start:end]], prompt_lengths=[len(prompt)])
            torch.testing.assert_close(logits[0], expected_prompt[end - 1], atol=LOGITS_TOLERANCE, rtol=0)
        for token, expected in zip(continuation, expected_steps):
            logits = engine.put([7], [[token]], prompt_lengths=[len(prompt)])
            torch.testing.assert_close(logits[0], expected, atol=LOGITS_TOLERANCE, rtol=0)
    finally:
        engine.flush(7)


def test_put_without_prompt_lengths_takes_its_first_put_as_the_prompt(convert, hf, pipeline):
    """The engine's default: the tokens of a sequence's first put are its prompt (alpha 3 for 20 tokens),
    and what follows is scored as generated (the alpha stays 3 up to 47 tokens, where Qwen's alpha of a
    47-token prompt would be 7)."""
    folder = convert(seq_length=16, use_dynamic_ntk=True, use_logn_attn=True)
    ids = hf.encode(MIXED_PROMPTS[4])
    reference = QwenV1Reference(folder).continuation_logits(ids[:20], ids[20:])
    engine = pipeline(folder).engine
    try:
        logits = [engine.put([8], [ids[:20]])[0]] + [engine.put([8], [[t]])[0] for t in ids[20:]]
    finally:
        engine.flush(8)
    torch.testing.assert_close(torch.stack(logits), reference, atol=LOGITS_TOLERANCE, rtol=0)


@pytest.mark.parametrize("lengths", [[20, 20], [0]])
def test_put_refuses_prompt_lengths_that_do_not_fit_its_uids(v1_folder, pipeline, lengths):
    engine = pipeline(v1_folder).engine
    with pytest.raises(ValueError, match="one prompt length >= 1 per uid"):
        engine.put([9], [[5, 6]], prompt_lengths=lengths)
    assert 9 not in engine.scheduler.kv.sequences


LONG_SCHEDULES = {
    **SCHEDULES,
    "chunked by 5": {"state_manager": {"max_ragged_batch_size": 5, "max_ragged_sequence_count": 5}},
    "decode graphs": {"state_manager": {"kv_block_size": BLOCK_SIZE}},
}


@pytest.fixture(scope="module")
def long_batch(convert, hf):
    """long_batch(seq_length) -> (folder, prompt ids, new tokens, the reference's greedy tokens), made once.
    Prompts of 2 to 81 tokens; the last two (16 and 30 tokens, admitted last, so the ones preempted under a
    tight cache) would pass the next alpha step if recomputed with their output as the prompt; they also
    finish early, so the decode steps after them run 7 and 6 sequences padded to a decode graph's 8."""
    made = {}

    def get(seq_length: int):
        if seq_length not in made:
            folder = convert(seq_length=seq_length, use_dynamic_ntk=True, use_logn_attn=True)
            reference = QwenV1Reference(folder)
            prompt_ids = [hf.encode(p) for p in MIXED_PROMPTS]
            prompt_ids += [prompt_ids[5][:16], prompt_ids[5][:30]]
            new_tokens = [NEW_TOKENS] * 6 + [14, 17]
            expected = [reference.greedy(ids, n) for ids, n in zip(prompt_ids, new_tokens)]
            for ids, generated in zip(prompt_ids, expected):
                _check_margins(reference, ids, generated)
            made[seq_length] = folder, prompt_ids, new_tokens, expected
        return made[seq_length]

    return get


@pytest.mark.parametrize("seq_length", [16, SHORT_SEQ_LENGTH])
@pytest.mark.parametrize("schedule", ["one_step", "chunked", "chunked by 5", "preempted", "decode graphs"])
def test_past_seq_length_greedy_matches_qwen_reference(long_batch, hf, qwen2_folder, pipeline, schedule,
                                                       seq_length):
    """A mixed batch of prompts within seq_length and up to 10 times past it, token-exact against the
    reference: every sequence keeps the alpha of its own prompt, however its prompt was chunked,
    recomputed after a preemption, or decoded through the padded CUDA-graph step."""
    folder, prompt_ids, new_tokens, expected = long_batch(seq_length)
    if schedule == "preempted":
        config, n_blocks = tight_kv_config(lambda _path: hf, qwen2_folder, MIXED_PROMPTS, NEW_TOKENS)
        needed = sum(math.ceil((len(ids) + n) / BLOCK_SIZE) for ids, n in zip(prompt_ids, new_tokens))
        assert needed > n_blocks, "the batch must not fit in the KV cache at once"
    else:
        config = LONG_SCHEDULES[schedule]
    pipe = pipeline(folder, inference_engine_config=config)
    if schedule == "decode graphs":  # on CPU the padded static step runs eagerly in place of the graph
        pipe.engine.capture_decode_graphs(8)
        assert pipe.engine.graphs.sizes[-1] == 8
    try:
        outputs = pipe.generate_tokens(prompt_ids, max_new_tokens=new_tokens, do_sample=False, ignore_eos=True)
    finally:
        pipe.engine.graphs = None
    assert [list(o.token_ids) for o in outputs] == expected
    if schedule == "preempted":
        assert pipe.loop.scheduler.num_preemptions > 0


def _check_margins(reference: QwenV1Reference, prompt_ids: list[int], generated: list[int]) -> None:
    logits = reference.continuation_logits(prompt_ids, generated[:-1])
    top2 = logits.topk(2, dim=-1).values
    margin = (top2[:, 0] - top2[:, 1]).min().item()
    assert margin > MIN_GREEDY_MARGIN, f"fixture problem: reference near-tie (margin {margin:.1e})"


def test_prefix_cache_keys_blocks_by_the_prompts_alpha(convert, hf, pipeline):
    """A cached block of a long prompt (rotated with alpha 7) is never reused by a short prompt with the
    same first tokens (alpha 1), nor the other way round; prompts of one alpha share blocks."""
    folder = convert(seq_length=16, use_dynamic_ntk=True, use_logn_attn=True)
    reference = QwenV1Reference(folder)
    long_ids = hf.encode(MIXED_PROMPTS[4])  # 47 tokens: alpha 7
    prompts = [long_ids, long_ids[:12], long_ids[:14], long_ids[:40]]  # alphas 7, 1, 1, 7
    pipe = pipeline(folder, inference_engine_config={"state_manager": {"kv_block_size": 2}})  # a fresh cache
    cache = pipe.engine.scheduler.kv.prefix_cache
    assert cache is not None, "prefix caching stays on for Qwen: blocks are keyed by alpha"
    hits = []
    for ids in prompts:
        before = cache.hit_blocks
        out = pipe.generate_tokens([ids], max_new_tokens=4, do_sample=False, ignore_eos=True)[0]
        hits.append(cache.hit_blocks - before)
        assert list(out.token_ids) == reference.greedy(ids, 4)
    # 14 tokens reuse the 6 blocks the 12-token prompt wrote; 40 tokens the first 19 blocks of the 47
    assert hits == [0, 0, 6, 19], "only prompts of the same alpha share blocks"


BAD_CONFIGS = {
    "quantization_config": ({"quantization_config": {"quant_method": "gptq", "bits": 4}}, "quantization_config"),
    "kv_channels": ({"kv_channels": 32}, "kv_channels"),
    "rotary_pct": ({"rotary_pct": 0.1}, "rotary_pct"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_unsupported_config_is_a_clear_error(v1_folder, tmp_path, case):
    import mii_core

    change, feature = BAD_CONFIGS[case]
    config = {**json.loads((v1_folder / "config.json").read_text()), **change}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"(?s)model_type 'qwen'.*{feature}.*not supported"):
        mii_core.pipeline(str(tmp_path))


@pytest.mark.parametrize("field", ["seq_length", "num_attention_heads"])
def test_missing_required_field_names_file_and_field(v1_folder, tmp_path, field):
    import mii_core

    config = json.loads((v1_folder / "config.json").read_text())
    del config[field]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"(?s)config\.json.*'{field}'"):
        mii_core.pipeline(str(tmp_path))
