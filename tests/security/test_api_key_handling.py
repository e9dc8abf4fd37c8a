"""The API key never shows in a process list (issue 22, row 14).

``mii-core serve`` takes the key from $MII_CORE_API_KEY or --api-key-file and warns when it is given
on the command line; a real deployment's router and replicas are checked through /proc.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from mii_core.serving.commands import _api_key
from support.serving import SMALL_KV, free_port_block, kill_group, processes_mentioning

KEY = "sk-security-test-7f3a91c2"


def args(**given) -> argparse.Namespace:
    return argparse.Namespace(**{"api_key": None, "api_key_file": None, **given})


def test_the_key_comes_from_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("MII_CORE_API_KEY", KEY)
    assert _api_key(args()) == KEY
    assert capsys.readouterr().err == ""


def test_the_key_comes_from_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv("MII_CORE_API_KEY", raising=False)
    (tmp_path / "key").write_text(KEY + "\n")
    assert _api_key(args(api_key_file=str(tmp_path / "key"))) == KEY
    with pytest.raises(ValueError, match="cannot read it"):
        _api_key(args(api_key_file=str(tmp_path / "missing")))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="first line is empty"):
        _api_key(args(api_key_file=str(tmp_path / "empty")))


def test_a_key_on_the_command_line_warns(monkeypatch, capsys):
    monkeypatch.delenv("MII_CORE_API_KEY", raising=False)
    assert _api_key(args(api_key=KEY)) == KEY
    assert "readable by every local user" in capsys.readouterr().err
    monkeypatch.setenv("MII_CORE_API_KEY", KEY)
    with pytest.raises(ValueError, match="given twice"):
        _api_key(args(api_key=KEY))


def rest_status(port: int, key: str | None) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    body = json.dumps({"prompts": ["hi"], "max_new_tokens": 2}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/mii/keyed", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def test_no_process_of_a_deployment_shows_the_key(checkpoint, tmp_path, mii_cache):
    key_file = tmp_path / "api-key"
    key_file.write_text(KEY)
    key_file.chmod(0o600)
    base = free_port_block(5)
    env = {k: v for k, v in os.environ.items() if k != "MII_CORE_API_KEY"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mii_core", "serve", str(checkpoint("gqa")), "--deployment-name", "keyed",
         "--port", str(base), "--rest-port", str(base + 3), "--rest-host", "127.0.0.1",
         "--api-key-file", str(key_file), "--model-option", f"inference_engine_config={json.dumps(SMALL_KV)}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        ready = server.stdout.readline()
        assert "deployment 'keyed' ready" in ready, ready
        folder = str(mii_cache / "keyed")
        deployment = processes_mentioning(folder)
        assert len(deployment) >= 2  # the router and its replica
        assert processes_mentioning(KEY) == []
        assert rest_status(base + 3, None) == 401
        assert rest_status(base + 3, KEY) == 200  # the key did reach the front end
    finally:
        server.terminate()
        server.wait(60)
        for pid in processes_mentioning(str(mii_cache / "keyed")):
            kill_group(pid)
