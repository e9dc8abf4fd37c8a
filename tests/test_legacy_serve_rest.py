"""A local feature-extraction deployment over REST: OpenAI's POST /v1/embeddings through the real ``openai``
client (strings, token ids, float and base64) equal to sentence-transformers-style mean pooling worked out
here from HF's AutoModel, MII's POST /mii/<deployment> with the task's keys, and bad input as 400s with
OpenAI's error body while the deployment keeps serving."""
from __future__ import annotations

import base64

import numpy as np
import openai
import pytest
import requests
import torch
import transformers

from support.legacy_serving import local_deployment, private_cache
from support.tiny_encoders import build_tiny_encoder

NAME = "embeddings_deployment"
KEY = "legacy-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXTS = ["Paris is the capital of France.", "I love this movie", "the quick brown fox"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_encoder(tmp_path_factory.mktemp("bert-embeddings"), "bert", "feature-extraction")


@pytest.fixture(scope="module")
def deployment(folder, tmp_path_factory):
    with private_cache(tmp_path_factory.mktemp("mii_cache")):
        with local_deployment("feature-extraction", folder, NAME, enable_restful_api=True,
                              restful_api_host="127.0.0.1", api_key=KEY) as (handle, record):
            yield handle, record


@pytest.fixture(scope="module")
def url(deployment):
    host, port = deployment[1].front_ends["rest"]
    return f"http://{host}:{port}"


@pytest.fixture(scope="module")
def reference(folder):
    """mean_pool(text or ids) -> (embedding, token count): the last hidden states averaged over the attention
    mask, as sentence-transformers' Pooling(mode="mean") does, from HF's AutoModel."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()

    def mean_pool(item):
        ids = torch.tensor([item if isinstance(item, list) else tokenizer(item)["input_ids"]])
        mask = torch.ones_like(ids)
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return pooled[0].tolist(), ids.shape[1]

    return mean_pool


def floats(embedding):
    """An embedding as floats: asked for in base64 explicitly, the client hands over the text (OpenAI's:
    the float32 values' little-endian bytes)."""
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4").tolist()
    return embedding


def test_openai_client_embeddings_equal_mean_pooling(url, reference):
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)
    ids = [2, 40, 41, 42, 3]
    for inputs in (TEXTS[0], TEXTS, ids, [ids, ids[:3]]):
        for encoding_format in ("float", "base64"):
            answer = client.embeddings.create(model="tiny-bert", input=inputs, encoding_format=encoding_format)
            items = [inputs] if isinstance(inputs, str) or isinstance(inputs[0], int) else inputs
            expected = [reference(item) for item in items]
            assert [d.index for d in answer.data] == list(range(len(items)))
            for data, (embedding, _) in zip(answer.data, expected):
                assert floats(data.embedding) == pytest.approx(embedding, abs=1e-5)
            assert answer.usage.prompt_tokens == answer.usage.total_tokens == sum(n for _, n in expected)
    default = client.embeddings.create(model="tiny-bert", input=TEXTS[1])  # base64 asked and decoded by the client
    assert default.data[0].embedding == pytest.approx(reference(TEXTS[1])[0], abs=1e-5)


def test_embeddings_bad_input_is_an_openai_400_then_serving_goes_on(url, reference):
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)
    for body, param in (({"model": "m"}, "input"), ({"model": "m", "input": []}, "input"),
                        ({"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format"),
                        ({"model": "m", "input": [10**6]}, None)):
        response = requests.post(f"{url}/v1/embeddings", json=body, headers=AUTH, timeout=60)
        assert response.status_code == 400, body
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"]
        if param:
            assert error["param"] == param
    with pytest.raises(openai.BadRequestError, match="token ids must be a non-empty list of ints below"):
        client.embeddings.create(model="m", input=[[5, 6], [10**6]])
    answer = client.embeddings.create(model="m", input=TEXTS[2], encoding_format="float")
    assert answer.data[0].embedding == pytest.approx(reference(TEXTS[2])[0], abs=1e-5)


def test_mii_route_takes_the_task_keys(url, reference):
    answer = requests.post(f"{url}/mii/{NAME}", json={"query": TEXTS[0]}, headers=AUTH, timeout=60).json()
    assert answer["response"] == pytest.approx(reference(TEXTS[0])[0], abs=1e-5) and answer["time_taken"] > 0
    mii_body = {"request": {"query": TEXTS[1]}, "kwargs": {"normalize": True}}  # MII Legacy's REST body
    unit = requests.post(f"{url}/mii/{NAME}", json=mii_body, headers=AUTH, timeout=60).json()["response"]
    expected = torch.tensor(reference(TEXTS[1])[0])
    assert unit == pytest.approx((expected / expected.norm()).tolist(), abs=1e-5)
    missing = requests.post(f"{url}/mii/{NAME}", json={"text": "hi"}, headers=AUTH, timeout=60)
    assert missing.status_code == 400
    assert "the feature-extraction query has no 'query' key" in missing.json()["error"]["message"]
    elsewhere = requests.post(f"{url}/mii/other_deployment", json={"query": "hi"}, headers=AUTH, timeout=60)
    assert elsewhere.status_code == 404 and NAME in elsewhere.json()["error"]["message"]
    again = requests.post(f"{url}/mii/{NAME}", json={"query": TEXTS[2]}, headers=AUTH, timeout=60).json()
    assert again["response"] == pytest.approx(reference(TEXTS[2])[0], abs=1e-5)


def test_the_api_key_guards_every_route(deployment, url):
    handle, _ = deployment  # the query handle (gRPC) carries the key from the deployment's record
    assert len(handle.query({"query": TEXTS[0]}).response) == 32
    for route, body in ((f"/mii/{NAME}", {"query": "hi"}), ("/v1/embeddings", {"model": "m", "input": "hi"})):
        refused = requests.post(f"{url}{route}", json=body, timeout=60)
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong").embeddings.create(model="m", input="hi")
