"""A persistent deployment through the core alone (no front-end plugin): serve → client, streaming,
another process, two replicas, a replica that fails to start, terminate."""

import json
import os
import subprocess
import sys
import threading

import pytest

import mii_core
from mii_core.serving.errors import DeploymentStartError
from support.compare import assert_responses_match
from support.prompts import MIXED_PROMPTS
from support.serving import SMALL_KV, free_port_block, pid_alive, port_free, processes_mentioning

GREEDY = dict(do_sample=False, ignore_eos=True)


@pytest.fixture(scope="module")
def core(checkpoint, oracle, deploy):
    """Started as the README starts one (no deployment_name), with two replicas and no front end."""
    path = checkpoint("gqa")
    client = deploy(path, replica_num=2, transports=[])
    return client, oracle(path), path


def test_serve_then_generate_matches_hf(core):
    client, hf, _ = core
    responses = client.generate(MIXED_PROMPTS, max_new_tokens=16, **GREEDY)
    assert_responses_match(responses, [hf.greedy(p, 16, ignore_eos=True) for p in MIXED_PROMPTS])
    assert client(MIXED_PROMPTS[:2], max_new_tokens=16, **GREEDY) == responses[:2]  # client(...) is generate


def test_readme_persistent_deployment_samples_run(core):
    client, _, path = core
    response = client.generate(["Deepspeed is", "Seattle is"], max_new_tokens=128)
    assert len(response) == 2 and all(isinstance(r, mii_core.Response) for r in response)
    assert all(0 < r.generated_length <= 128 and r.prompt_length > 0 for r in response)
    other = mii_core.client(str(path))  # by model, as the README's `mii.client("mistralai/...")`
    assert other.generate("Deepspeed is", max_new_tokens=128)[0].generated_length <= 128


def test_streaming_fn_pieces_add_up_to_the_unstreamed_text(core):
    client, hf, _ = core
    pieces = []
    result = client.generate("The old man", streaming_fn=pieces.append, max_new_tokens=24, **GREEDY)
    assert all(isinstance(p, list) and len(p) == 1 for p in pieces)  # MII hands a list of Responses
    texts = [p[0].generated_text for p in pieces]
    assert "".join(texts) == result[0].generated_text == hf.greedy("The old man", 24, ignore_eos=True).text
    assert [p[0].finish_reason for p in pieces] == ["none"] * (len(pieces) - 1) + ["length"]
    # Each piece counts the tokens so far. How many pieces there are depends on timing: a router that fell
    # behind its replica joins the chunks waiting for it (link.RemoteStream), so on a loaded machine the 24
    # tokens may come in a few pieces, or one.
    lengths = [p[0].generated_length for p in pieces]
    assert lengths == sorted(lengths) and lengths[-1] == 24  # the last piece may add only its finish_reason


def test_streaming_fn_takes_a_single_prompt(core):
    client, _, _ = core
    with pytest.raises(ValueError, match="streaming_fn streams a single prompt"):
        client.generate(["a", "b"], streaming_fn=print)


def test_bad_input_is_a_value_error_and_the_deployment_keeps_serving(core):
    client, hf, _ = core
    with pytest.raises(ValueError, match="unknown option 'bogus'"):
        client.generate("river", bogus=1)
    with pytest.raises(ValueError, match="max_length .* must exceed the prompt length"):
        client.generate(MIXED_PROMPTS[5], max_length=3)
    with pytest.raises(ValueError, match="prompts is empty"):
        client.generate([])
    assert_responses_match(client.generate("river", max_new_tokens=5, **GREEDY), [hf.greedy("river", 5, ignore_eos=True)])


def test_client_by_name_from_another_process(core):
    client, hf, _ = core
    script = (f"import json, mii_core; r = mii_core.client({client.deployment_name!r}).generate("
              f"'The old man', max_new_tokens=12, do_sample=False, ignore_eos=True)[0]; "
              "print(json.dumps([r.generated_text, r.finish_reason]))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=os.environ)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [hf.greedy("The old man", 12, ignore_eos=True).text, "length"]


def test_two_replicas_both_get_work(core):
    client, hf, _ = core
    before = [r["served"] for r in client.health()["replicas"]]
    results, threads = {}, []
    for i in range(8):
        prompt = MIXED_PROMPTS[i % len(MIXED_PROMPTS)]
        threads.append(threading.Thread(target=lambda i=i, p=prompt: results.__setitem__(
            i, client.generate(p, max_new_tokens=24, **GREEDY))))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i in range(8):
        prompt = MIXED_PROMPTS[i % len(MIXED_PROMPTS)]
        assert_responses_match(results[i], [hf.greedy(prompt, 24, ignore_eos=True)])
    served = [r["served"] - b for r, b in zip(client.health()["replicas"], before)]
    assert sum(served) == 8 and min(served) >= 2, f"work per replica: {served}"


def test_health_reports_each_replica(core):
    client, _, _ = core
    health = client.health()
    assert health["status"] == "ok" and health["replicas_alive"] == 2
    assert [r["alive"] for r in health["replicas"]] == [True, True]
    assert all(pid_alive(r["pid"]) for r in health["replicas"])


def test_a_replica_that_fails_to_start_is_an_error_with_its_log_tail(tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    base = free_port_block(4)
    with pytest.raises(DeploymentStartError) as failure:
        mii_core.serve(str(broken), deployment_name="broken", port_number=base, transports=[],
                       inference_engine_config=SMALL_KV)
    message = str(failure.value)
    assert "replica 0 exited with code 1 while starting" in message
    assert "no installed plugin handles model_type 'no-such-architecture'" in message  # from the replica's log
    assert all(port_free(base + i) for i in range(4))
    assert mii_core.serving.metadata.read_record("broken") is None


def test_readiness_has_a_timeout_and_leaves_nothing_behind(checkpoint, mii_cache):
    base = free_port_block(4)
    with pytest.raises(DeploymentStartError, match=r"replica\(s\) 0 not ready after startup_timeout=0 s"):
        mii_core.serve(str(checkpoint("gqa")), deployment_name="slow", port_number=base, transports=[],
                       startup_timeout=0.3, inference_engine_config=SMALL_KV)  # less than importing torch
    folder = str(mii_cache / "slow")
    assert processes_mentioning(folder) == []
    assert all(port_free(base + i) for i in range(4))
    assert mii_core.serving.metadata.read_record("slow") is None



def test_terminate_stops_every_process_and_frees_every_port(core):
    """Last in this module: it ends the module's deployment."""
    client, _, _ = core
    health = client.health()
    pids = [client.record.router_pid] + [r["pid"] for r in health["replicas"]]
    ports = [port for _, port in client.record.replica_links] + [client.record.router_link[1]]
    assert all(pid_alive(pid) for pid in pids)
    client.terminate_server()
    assert not any(pid_alive(pid) for pid in pids)
    assert all(port_free(port) for port in ports)
    with pytest.raises(ValueError, match=f"no deployment named '{client.deployment_name}'"):
        mii_core.client(client.deployment_name)
