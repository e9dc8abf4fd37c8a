"""Each quantization mode through a persistent deployment: ``mii_core.serve(path, quantization_mode=...)``
(MII's spelling) or DeepSpeed's ``inference_engine_config.quantization.quantization_mode``, the replica
process quantizing the checkpoint as it loads it, and its greedy output over gRPC equal, token for token, to
the mode's own PyTorch reference (tests/support/quant_reference.py: transformers on the dequantized
weights), on every architecture plugin. A mode the engine does not know is refused before any process
starts."""
from __future__ import annotations

import pytest
from transformers import AutoTokenizer

import mii_core
from mii_core.engine.builder import load_policy
from support.quant_reference import quantized_targets, reference_greedy, write_reference
from support.serving import free_port_block, port_free
from test_quant_parity import ENGINE, FAMILIES, NEW_TOKENS, QUANT_PROMPTS

GREEDY = dict(do_sample=False, ignore_eos=True, max_new_tokens=NEW_TOKENS)


def _options(mode: str, spelling: str) -> dict:
    if spelling == "mii":
        return dict(quantization_mode=mode, inference_engine_config=ENGINE)
    return dict(inference_engine_config={**ENGINE, "quantization": {"quantization_mode": mode}})


# every architecture plugin served, each in one mode and one spelling taken in turn (every mode and spelling on
# several families, dense and mixture-of-experts; test_quant_parity runs every mode on every family through
# the pipeline), and Llama in all three
MODES = ("fp8", "wf8af16", "wf6af16")
OTHERS = [family for family in sorted(FAMILIES) if family != "llama"]
CASES = [("llama", mode, "mii") for mode in MODES] + [
    (family, MODES[i % 3], ("mii", "deepspeed")[i % 2]) for i, family in enumerate(OTHERS)]


@pytest.mark.parametrize("family, mode, spelling", CASES)
def test_a_served_mode_generates_its_references_tokens(deploy, tmp_path_factory, tmp_path, family, mode, spelling):
    path, reference = FAMILIES[family](tmp_path_factory.mktemp)  # the reference: transformers' own layout
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    pipe = mii_core.pipeline(str(path), quantization_mode=mode, dtype="float32", inference_engine_config=ENGINE)
    try:  # only which parameters the engine quantizes: the reference dequantizes those
        targets = quantized_targets(pipe.engine.model)
    finally:
        pipe.destroy()
    folder, linears = write_reference(reference, tmp_path / "reference", load_policy(reference), targets, mode)
    token_lists = [tokenizer(prompt)["input_ids"] for prompt in QUANT_PROMPTS]
    expected = reference_greedy(folder, token_lists, NEW_TOKENS, mode, linears)

    client = deploy(path, transports=[], dtype="float32", **_options(mode, spelling))
    # one prompt a request, in turn: fp8's per-tensor activation scale then covers what the reference's does
    responses = [client.generate(prompt, **GREEDY)[0] for prompt in QUANT_PROMPTS]
    assert [r.generated_text for r in responses] == [tokenizer.decode(ids, skip_special_tokens=True)
                                                    for ids in expected]
    assert [r.generated_length for r in responses] == [NEW_TOKENS] * len(QUANT_PROMPTS)
    client.terminate_server(timeout=20)


def test_serving_an_unknown_mode_is_refused_before_anything_starts(checkpoint):
    path = checkpoint("gqa")
    port = free_port_block(4)
    with pytest.raises(ValueError, match="choose one of fp8, wf8af16, wf6af16"):
        mii_core.serve(str(path), quantization_mode="int4", port_number=port)
    assert all(port_free(p) for p in range(port, port + 4)), "a port was taken: something started"

