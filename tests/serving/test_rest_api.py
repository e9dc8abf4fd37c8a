"""The REST front end (mii-server-rest) as a user reaches it: curl, requests, raw HTTP."""

import json
import subprocess

import pytest
import requests

from support.compare import reference_fields
from support.prompts import MIXED_PROMPTS


@pytest.fixture(scope="module")
def rest(demo, chat_checkpoint, oracle):
    host, port = demo.record.front_ends["rest"]
    return f"http://localhost:{port}", demo, oracle(chat_checkpoint)


def sse_events(response):
    """The JSON payloads of an SSE response, up to [DONE]."""
    events = []
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            data = line[6:].decode()
            if data == "[DONE]":
                return events
            events.append(json.loads(data))
    raise AssertionError(f"stream ended without [DONE] after {events}")


def test_the_readme_curl_line_answers_a_json_list(rest):
    url, demo, _ = rest
    line = ['curl', '-s', '-X', 'POST', '-H', 'Content-Type: application/json', '-d',
            '{"prompts": ["DeepSpeed is"], "max_length": 128}', f'{url}/mii/demo']
    done = subprocess.run(line, capture_output=True, text=True, timeout=120)
    answer = json.loads(done.stdout)
    assert isinstance(answer, list) and len(answer) == 1
    assert set(answer[0]) == {"generated_text", "prompt_length", "generated_length", "finish_reason"}
    assert answer[0]["prompt_length"] + answer[0]["generated_length"] <= 128


def test_the_readme_requests_sample(rest):
    url, _, _ = rest
    params = {"prompts": ["DeepSpeed is", "Seattle is"], "max_length": 128}
    json_params = json.dumps(params)
    output = requests.post(f"{url}/mii/demo", data=json_params, headers={"Content-Type": "application/json"})
    assert output.status_code == 200 and len(output.json()) == 2


def test_greedy_output_matches_hf(rest):
    url, _, hf = rest
    answer = requests.post(f"{url}/mii/demo", json={"prompts": MIXED_PROMPTS, "max_new_tokens": 16,
                                                    "do_sample": False, "ignore_eos": True}).json()
    assert answer == [reference_fields(hf.greedy(p, 16, ignore_eos=True)) for p in MIXED_PROMPTS]


def test_stream_true_is_server_sent_events_adding_up_to_the_unstreamed_text(rest):
    url, _, hf = rest
    prompts = MIXED_PROMPTS[:3]
    body = {"prompts": prompts, "max_new_tokens": 20, "do_sample": False, "ignore_eos": True, "stop": ["the"]}
    whole = requests.post(f"{url}/mii/demo", json=body).json()
    response = requests.post(f"{url}/mii/demo", json={**body, "stream": True}, stream=True)
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(response)
    for index, expected in enumerate(whole):
        mine = [e for e in events if e["index"] == index]
        assert "".join(e["generated_text"] for e in mine) == expected["generated_text"]
        assert [e["finish_reason"] for e in mine] == ["none"] * (len(mine) - 1) + [expected["finish_reason"]]
    assert len(events) > 2 * len(prompts)


def post_raw(url, body: bytes, headers=None):
    return requests.post(f"{url}/mii/demo", data=body, headers={"Content-Type": "application/json", **(headers or {})})


@pytest.mark.parametrize("body, names", [
    (b'{"prompts": ["a"', "not valid JSON"),
    (b'{"max_new_tokens": 4}', "needs 'prompts'"),
    (b'{"prompts": "river", "bogus": 1}', "unknown option 'bogus'"),
    (b'{"prompts": "river", "max_new_tokens": "four"}', "max_new_tokens"),
    (b'{"prompts": 7}', "prompts must be a string or a list of strings"),
    (b'{"prompts": "river", "max_length": 2}', "must exceed the prompt length"),
    (b'{"prompts": "caf\xe9"}', "not UTF-8"),
    (b'[1, 2]', "must be a JSON object"),
    (b'{"prompts": "river", "stream": "yes"}', "'stream' must be true or false"),
    (b'{"prompts": ["' + b"river " * 2_000_000 + b'"]}', "the limit is 4194304"),
], ids=["malformed", "no-prompts", "unknown-option", "wrong-type", "prompts-type", "over-max-length",
        "not-utf8", "not-object", "stream-type", "oversized"])
def test_bad_input_is_a_400_naming_the_problem_and_the_server_keeps_serving(rest, body, names):
    url, _, hf = rest
    response = post_raw(url, body)
    assert response.status_code == 400, response.text
    assert names in response.json()["error"]["message"]
    after = requests.post(f"{url}/mii/demo", json={"prompts": "river", "max_new_tokens": 4, "do_sample": False,
                                                   "ignore_eos": True}).json()
    assert after == [reference_fields(hf.greedy("river", 4, ignore_eos=True))]


def test_a_prompt_over_the_model_length_is_a_400(rest):
    url, _, _ = rest
    response = requests.post(f"{url}/mii/demo", json={"prompts": "river " * 600, "max_new_tokens": 4})
    assert response.status_code == 400 and "prompt" in response.json()["error"]["message"]


def test_an_unknown_deployment_name_is_a_404_naming_this_one(rest):
    url, _, _ = rest
    response = requests.post(f"{url}/mii/other", json={"prompts": "river"})
    assert response.status_code == 404 and "this is 'demo'" in response.json()["error"]["message"]


def test_healthz_reports_the_replicas(rest):
    url, _, _ = rest
    health = requests.get(f"{url}/healthz").json()
    assert health["status"] == "ok" and health["deployment"] == "demo"
    assert [r["alive"] for r in health["replicas"]] == [True, True]


def scrape(url):
    text = requests.get(f"{url}/metrics").text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_metrics_count_requests_tokens_and_latency(rest):
    url, _, _ = rest
    before = scrape(url)
    requests.post(f"{url}/mii/demo", json={"prompts": ["river", "The old man"], "max_new_tokens": 6,
                                           "do_sample": False, "ignore_eos": True})
    requests.post(f"{url}/mii/demo", json={"prompts": "river", "bogus": 1})  # refused by the engine
    post_raw(url, b"{not json")  # refused by the REST layer
    after = scrape(url)

    def grew(name):
        return after.get(name, 0) - before.get(name, 0)

    assert grew('mii_requests_total{outcome="ok"}') == 1
    assert grew('mii_requests_total{outcome="invalid"}') == 2
    assert grew("mii_generated_tokens_total") == 12
    assert grew("mii_time_to_first_token_seconds_count") == 2  # one per prompt
    assert grew("mii_inter_token_latency_seconds_count") == 10  # the 5 tokens after the first, per prompt
    assert after["mii_replicas_alive"] == 2 and after["mii_queue_depth"] == 0
    assert after["mii_kv_blocks_total"] == 2 * 96 and after["mii_generation_tokens_per_second"] > 0
    for gauge in ("mii_running_sequences", "mii_kv_blocks_in_use"):
        assert gauge in after


def test_the_server_is_waitress_not_flasks_development_server(rest):
    url, _, _ = rest
    # waitress, configured with ident="mii-core"; Flask's development server would say "Werkzeug/..."
    assert requests.get(f"{url}/healthz").headers["Server"] == "mii-core"
