"""OpenAI's penalties and logit_bias and vLLM's extra sampling fields (sent by the official openai client in
extra_body), through a real deployment on loopback, against HF transformers' generate on the same tokens;
/mii and gRPC carry the same options; each bad value is a 400 naming its field."""
from __future__ import annotations

import openai
import pytest
import requests
import torch
from transformers import LogitsProcessorList, MinNewTokensLengthLogitsProcessor

from mii_core.sampling.bad_words import bad_words_token_ids
from mii_server_grpc.convert import make_request
from support.prompts import MIXED_PROMPTS
from test_penalties_generation import OpenAIPenalties  # the PyTorch reference of OpenAI's formula

PROMPT = MIXED_PROMPTS[2]
NEW = 12


def hf_new_ids(hf, ids, max_new_tokens=NEW, **kwargs) -> list[int]:
    with torch.no_grad():
        out = hf.model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=max_new_tokens,
                                eos_token_id=None, **kwargs)
    return out[0, len(ids):].tolist()


def text(hf, new_ids) -> str:
    return hf.tokenizer.decode(new_ids, skip_special_tokens=True)


def complete(client, **ask):
    ask = {"model": "demo", "prompt": PROMPT, "max_tokens": NEW, "temperature": 0, **ask}
    extra = ask.setdefault("extra_body", {})
    extra.setdefault("ignore_eos", True)
    return client.completions.create(**ask).choices[0]


def test_presence_frequency_and_logit_bias_equal_hf(api):
    client, hf, _ = api
    ids = hf.encode(PROMPT)
    plain = hf_new_ids(hf, ids)
    bias = {str(plain[1]): -100, "9": 1.5}
    choice = complete(client, presence_penalty=1.2, frequency_penalty=0.6, logit_bias=bias)
    expected = hf_new_ids(hf, ids, sequence_bias=[[[int(t)], float(b)] for t, b in bias.items()],
                          logits_processor=LogitsProcessorList([OpenAIPenalties(len(ids), 1.2, 0.6)]))
    assert choice.text == text(hf, expected) and expected != plain


def test_vllm_repetition_penalty_and_filters_in_extra_body_equal_hf(api):
    client, hf, _ = api
    ids = hf.encode(PROMPT)
    extra = {"repetition_penalty": 1.4, "top_k": -1, "min_p": 0.05}  # greedy: top_k and min_p change nothing
    choice = complete(client, extra_body=extra)
    assert choice.text == text(hf, hf_new_ids(hf, ids, repetition_penalty=1.4))
    streamed = client.completions.create(model="demo", prompt=PROMPT, max_tokens=NEW, temperature=0, stream=True,
                                         extra_body={**extra, "ignore_eos": True})
    assert "".join(c.choices[0].text for c in streamed if c.choices) == choice.text


def test_chat_takes_the_same_fields(api):
    client, hf, _ = api
    messages = [{"role": "user", "content": "the river bank"}]
    ids = hf.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    completion = client.chat.completions.create(model="demo", messages=messages, max_tokens=NEW, temperature=0,
                                                presence_penalty=-1.0,
                                                extra_body={"repetition_penalty": 1.2, "ignore_eos": True})
    expected = hf_new_ids(hf, ids, repetition_penalty=1.2,
                          logits_processor=LogitsProcessorList([OpenAIPenalties(len(ids), -1.0, 0.0)]))
    assert completion.choices[0].message.content == text(hf, expected)


@pytest.mark.parametrize("include", [False, True])
def test_stop_token_ids_end_the_output_and_keep_their_text_only_when_asked(api, include):
    client, hf, _ = api
    plain = hf_new_ids(hf, hf.encode(PROMPT))
    stop_at = 4
    first = plain.index(plain[stop_at])  # the token's first appearance ends the output
    choice = complete(client, extra_body={"stop_token_ids": [plain[stop_at]], "include_stop_str_in_output": include})
    assert choice.finish_reason == "stop"
    assert choice.text == text(hf, plain[:first + 1] if include else plain[:first])


@pytest.mark.parametrize("include", [False, True])
def test_include_stop_str_in_output_keeps_the_stop_string(api, include):
    client, hf, _ = api
    reference = text(hf, hf_new_ids(hf, hf.encode(PROMPT)))
    stop = reference[6:9]
    at = reference.find(stop)
    for stream in (False, True):
        ask = dict(model="demo", prompt=PROMPT, max_tokens=NEW, temperature=0, stop=[stop], stream=stream,
                   extra_body={"include_stop_str_in_output": include, "ignore_eos": True})
        got = client.completions.create(**ask)
        got = "".join(c.choices[0].text for c in got if c.choices) if stream else got.choices[0].text
        assert got == reference[:at + len(stop) if include else at]


def test_bad_words_and_allowed_token_ids_equal_hf(api):
    client, hf, _ = api
    ids = hf.encode(PROMPT)
    plain = hf_new_ids(hf, ids)
    word, banned = next((w, b) for w, b in candidate_bad_words(hf, plain) if any(len(s) == 1 for s in b))
    choice = complete(client, extra_body={"bad_words": [word]})
    assert choice.text == text(hf, hf_new_ids(hf, ids, bad_words_ids=banned)) and choice.text != text(hf, plain)
    allowed = sorted(set(plain[2:6]))
    choice = complete(client, extra_body={"allowed_token_ids": allowed})
    assert choice.text == text(hf, hf_new_ids(hf, ids, prefix_allowed_tokens_fn=lambda _b, _i: allowed))


def candidate_bad_words(hf, new_ids):
    """(word, its banned token sequences) for each output token that is a whole word on its own."""
    for token in new_ids:
        word = hf.tokenizer.decode([token]).strip()
        banned = bad_words_token_ids(hf.tokenizer, [word]) if word else []
        if [token] in banned:
            yield word, banned


def test_skip_special_tokens_false_shows_them(api):
    client, hf, _ = api
    bos = hf.tokenizer.bos_token_id  # pushed to the top by a bias: three special tokens in a row
    shown = complete(client, max_tokens=3, logit_bias={str(bos): 100}, extra_body={"skip_special_tokens": False})
    hidden = complete(client, max_tokens=3, logit_bias={str(bos): 100})
    assert (shown.text, hidden.text) == (hf.tokenizer.bos_token * 3, "")


def test_truncate_prompt_tokens_keeps_the_prompts_last_tokens(api):
    client, hf, _ = api
    ids = hf.encode(MIXED_PROMPTS[3])
    completion = client.completions.create(model="demo", prompt=MIXED_PROMPTS[3], max_tokens=NEW, temperature=0,
                                           extra_body={"truncate_prompt_tokens": 5, "ignore_eos": True})
    assert completion.usage.prompt_tokens == 5
    assert completion.choices[0].text == text(hf, hf_new_ids(hf, ids[-5:]))


def test_min_tokens_bars_the_stop_tokens_as_hfs_min_new_tokens(api):
    """vLLM's min_tokens bars EOS and stop_token_ids for the first 3 tokens; the first of them after that
    ends the output, its text left out."""
    client, hf, _ = api
    prompt = MIXED_PROMPTS[3]  # its greedy output begins with a token that comes back only at the end
    stop, reference, end = next(barred_stop_cases(hf, hf.encode(prompt), 3))
    choice = complete(client, prompt=prompt,
                      extra_body={"min_tokens": 3, "stop_token_ids": [stop], "ignore_eos": False})
    assert (choice.text, choice.finish_reason) == (text(hf, reference[:end]), "stop")


def barred_stop_cases(hf, ids, minimum):
    """(stop token, HF's output with it and EOS barred for ``minimum`` tokens, where it first ends it) for
    the output tokens that come back after the bar: the cases where the bar matters."""
    plain = hf_new_ids(hf, ids)
    for stop in plain[:minimum]:
        barred = MinNewTokensLengthLogitsProcessor(len(ids), minimum, [stop, hf.eos_id])
        reference = hf_new_ids(hf, ids, logits_processor=LogitsProcessorList([barred]))
        ends = [i for i, token in enumerate(reference) if token in (stop, hf.eos_id)]
        if ends:
            yield stop, reference, ends[0]


@pytest.mark.parametrize("field, value", [
    ("presence_penalty", 3), ("frequency_penalty", "x"), ("logit_bias", {"abc": 1}), ("logit_bias", {"5": 101}),
    ("logit_bias", {"9999999": 1}), ("repetition_penalty", 0), ("min_p", 1.5), ("top_k", -2), ("min_tokens", -1),
    ("stop_token_ids", [-1]), ("stop_token_ids", [9999999]), ("bad_words", [""]), ("allowed_token_ids", []),
    ("allowed_token_ids", [9999999]), ("skip_special_tokens", "no"), ("include_stop_str_in_output", 1),
    ("truncate_prompt_tokens", 0), ("min_tokens", 20),  # 20 > max_tokens
    ("priority", 3),  # the demo deployment schedules first come, first served: a priority it would not honour
])
@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_each_bad_value_is_a_400_naming_its_field(api, route, field, value):
    _, _, url = api
    body = {"model": "demo", "max_tokens": 8, field: value}
    body.update({"prompt": "river"} if route == "/v1/completions" else {"messages": [{"role": "user", "content": "x"}]})
    answer = requests.post(f"{url}{route}", json=body, timeout=120)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == field and field in error["message"], error


def test_the_openai_client_sees_the_400(api):
    client, _, _ = api
    with pytest.raises(openai.BadRequestError) as failure:
        client.completions.create(model="demo", prompt="river", max_tokens=4, extra_body={"top_k": -7})
    assert "top_k" in failure.value.message


def test_mii_route_and_grpc_carry_the_same_options(api, demo):
    _, hf, url = api
    ids = hf.encode(PROMPT)
    options = {"max_new_tokens": NEW, "do_sample": False, "ignore_eos": True, "repetition_penalty": 1.3,
               "logit_bias": {"9": 2.0}, "presence_penalty": 0.5}
    expected = text(hf, hf_new_ids(hf, ids, repetition_penalty=1.3, sequence_bias=[[[9], 2.0]],
                                   logits_processor=LogitsProcessorList([OpenAIPenalties(len(ids), 0.5, 0.0)])))
    answer = requests.post(f"{url}/mii/demo", json={"prompts": [PROMPT], **options}, timeout=120)
    assert answer.status_code == 200 and answer.json()[0]["generated_text"] == expected, answer.text
    import grpc

    from mii_server_grpc.proto import modelresponse_pb2_grpc as pb_grpc

    host, port = demo.record.front_ends["grpc"]
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        reply = pb_grpc.ModelResponseStub(channel).GeneratorReply(make_request([PROMPT], **options), timeout=120)
    assert reply.response[0].response == expected


def test_best_of_answers_the_completions_of_highest_logprob(api):
    """best_of=4, n=2 generates the four completions that n=4 with the same seed generates (choice j samples
    with seed + j) and answers the two whose generated tokens' logprobs sum highest, best first; usage
    counts all four. The ranking is worked out here from the n=4 answer's own logprobs."""
    client, _, url = api
    ask = dict(model="demo", prompt=PROMPT, max_tokens=6, temperature=1.5, seed=11)
    four = client.completions.create(n=4, logprobs=0, **ask)
    totals = sorted(((sum(c.logprobs.token_logprobs), c.text) for c in four.choices), reverse=True)
    best = client.completions.create(n=2, best_of=4, **ask)
    assert [c.text for c in best.choices] == [text for _, text in totals[:2]]
    assert [c.index for c in best.choices] == [0, 1] and best.choices[0].logprobs is None  # none asked for
    assert best.usage.completion_tokens == four.usage.completion_tokens
    assert best.usage.prompt_tokens == four.usage.prompt_tokens
    for bad_body in ({"n": 3, "best_of": 2}, {"best_of": 2, "stream": True}):
        answer = requests.post(f"{url}/v1/completions", timeout=60, json={"model": "demo", "prompt": PROMPT,
                                                                           "max_tokens": 2, **bad_body})
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "best_of", answer.text
