"""Bad requests and bad checkpoints fail with errors that say what to change, and leave the
pipeline serving normal requests correctly."""

import json
import re
import shutil

import pytest
from safetensors.torch import load_file, save_file

import mii_core

USER_ERRORS = (ValueError, TypeError)
PROMPT = "The old man"
CHECK_TOKENS = 8


@pytest.fixture(scope="module")
def gqa(checkpoint, oracle, pipeline):
    path = checkpoint("gqa")
    return path, pipeline(path), oracle(path)


def assert_still_serves(pipe, hf):
    """The same pipeline answers a normal request exactly like HF."""
    [response] = pipe([PROMPT], do_sample=False, max_new_tokens=CHECK_TOKENS, ignore_eos=True)
    expected = hf.greedy(PROMPT, CHECK_TOKENS, ignore_eos=True)
    assert (response.generated_text, response.generated_length) == (expected.text, CHECK_TOKENS)


@pytest.mark.parametrize(
    "prompts, options, named",
    [
        # \b: a message naming only the valid "max_new_tokens" must not pass.
        (["hi"], dict(max_new_token=5), r"max_new_token\b"),
        ([], {}, "(?i)prompt"),
        ([""], {}, "(?i)prompt"),
        ([PROMPT], dict(max_length=4), "max_length"),  # the prompt alone is 4 tokens
        ([PROMPT], dict(max_length=2), "max_length"),
        ([PROMPT], dict(max_new_tokens=0), "max_new_tokens"),
        ([PROMPT], dict(max_new_tokens=-1), "max_new_tokens"),
        ([PROMPT], dict(do_sample=True, top_p=0), "top_p"),
        ([PROMPT], dict(do_sample=True, top_p=1.5), "top_p"),
        ([PROMPT], dict(do_sample=True, top_k=-2), "top_k"),  # 0 and -1: no top-k (vLLM)
        ([PROMPT], dict(do_sample=True, temperature=0), "temperature"),
        # values that would not silently change meaning or reach the engine as NaN / overflow
        ([PROMPT], dict(temperature=float("inf")), "temperature"),
        ([PROMPT], dict(top_p=float("nan")), "top_p"),
        ([PROMPT], dict(stop=123), "stop"),
        ([PROMPT], dict(stop=["ok", 5]), "stop"),
        ([PROMPT], dict(seed=2**64), "seed"),
        ([PROMPT], dict(seed=-1), "seed"),
        ([PROMPT], dict(min_new_tokens=6, max_new_tokens=5), "min_new_tokens"),
        # strict types: True is not 1, "no" is not False, 2.0 is not a token count
        ([PROMPT], dict(max_new_tokens=True), "max_new_tokens"),
        ([PROMPT], dict(top_k=True), "top_k"),
        ([PROMPT], dict(do_sample="no"), "do_sample"),
        ([PROMPT], dict(ignore_eos=1), "ignore_eos"),
        ([PROMPT], dict(max_new_tokens=2.0), "max_new_tokens"),
        ([PROMPT], dict(top_p="0.5"), "top_p"),
        (["fine", "bad \ud800 text"], {}, r"prompt 1\b.*surrogate"),
    ],
    ids=lambda value: repr(value)[:40] if not isinstance(value, str) else value,
)
def test_bad_request_is_rejected_and_pipeline_survives(gqa, prompts, options, named):
    _, pipe, hf = gqa
    if named == "max_length":
        assert len(hf.encode(PROMPT)) == 4, "fixture: the max_length cases assume a 4-token prompt"
    with pytest.raises(USER_ERRORS, match=named):
        pipe(prompts, **options)
    assert_still_serves(pipe, hf)


def test_prompt_of_no_tokens_is_named_before_the_engine(gqa, tmp_path, pipeline):
    """With a tokenizer that strips whitespace and adds no BOS, "   " becomes no tokens; the engine
    once failed deep inside with "put got an empty token list", naming no prompt."""
    path, pipe, hf = gqa
    stripping = copy_checkpoint(path, tmp_path / "stripping-tokenizer")
    tokenizer_file = stripping / "tokenizer.json"
    tokenizer = json.loads(tokenizer_file.read_text())
    tokenizer["normalizer"] = {"type": "Strip", "strip_left": True, "strip_right": True}
    tokenizer["post_processor"] = None
    tokenizer_file.write_text(json.dumps(tokenizer))
    other = pipeline(stripping)
    with pytest.raises(ValueError, match=r"prompt 1 \('   '\) becomes no tokens"):
        other([PROMPT, "   "], do_sample=False, max_new_tokens=2)
    assert other([PROMPT], do_sample=False, max_new_tokens=2)[0].generated_length == 2
    assert_still_serves(pipe, hf)


def test_single_empty_string_prompt_is_rejected(gqa):
    _, pipe, hf = gqa
    with pytest.raises(USER_ERRORS, match="(?i)prompt"):
        pipe("")
    assert_still_serves(pipe, hf)


def test_unknown_model_option_is_named(gqa):
    path, pipe, hf = gqa
    with pytest.raises(USER_ERRORS, match="bogus_option"):
        mii_core.pipeline(str(path), bogus_option=1)
    assert_still_serves(pipe, hf)


def test_missing_model_path_is_named(gqa, tmp_path):
    _, pipe, hf = gqa
    missing = tmp_path / "no-such-model"
    with pytest.raises(USER_ERRORS, match=re.escape("no-such-model")):
        mii_core.pipeline(str(missing))
    assert_still_serves(pipe, hf)


def copy_checkpoint(path, destination):
    shutil.copytree(path, destination)
    return destination


def rewrite_weights(folder, edit):
    weights_file = folder / "model.safetensors"
    tensors = load_file(weights_file)
    edit(tensors)
    save_file(tensors, weights_file, metadata={"format": "pt"})


def test_missing_weight_is_named(gqa, tmp_path):
    path, pipe, hf = gqa
    broken = copy_checkpoint(path, tmp_path / "missing-weight")
    rewrite_weights(broken, lambda tensors: tensors.pop("model.layers.1.mlp.down_proj.weight"))
    with pytest.raises(USER_ERRORS, match=re.escape("layers.1.mlp.down_proj")):
        mii_core.pipeline(str(broken))
    assert_still_serves(pipe, hf)


def test_wrong_shaped_weight_is_named(gqa, tmp_path):
    path, pipe, hf = gqa
    broken = copy_checkpoint(path, tmp_path / "wrong-shape")
    name = "model.layers.0.self_attn.k_proj.weight"  # [kv_heads * head_dim, hidden] = [32, 64]

    def halve_rows(tensors):
        tensors[name] = tensors[name][:16].clone()

    rewrite_weights(broken, halve_rows)
    with pytest.raises(USER_ERRORS, match=re.escape("layers.0.self_attn.k_proj")):
        mii_core.pipeline(str(broken))
    assert_still_serves(pipe, hf)


def test_unsupported_model_type_suggests_plugin(gqa, tmp_path):
    path, pipe, hf = gqa
    other = copy_checkpoint(path, tmp_path / "bigcode")
    config_file = other / "config.json"
    config = json.loads(config_file.read_text())
    config["model_type"] = "gpt_bigcode"
    config_file.write_text(json.dumps(config))
    with pytest.raises(USER_ERRORS, match="gpt_bigcode") as failure:
        mii_core.pipeline(str(other))
    assert "pip install mii-plugin-" in str(failure.value)
    assert_still_serves(pipe, hf)


def test_destroyed_pipeline_refuses_requests(checkpoint):
    pipe = mii_core.pipeline(str(checkpoint("mha")))
    pipe.destroy()
    with pytest.raises(RuntimeError, match="destroyed"):
        pipe(["hi"])
