"""Errors say which field they are about, as OpenAI's do, and loose types are refused (issue 22, the smaller
items). Against the shared demo deployment (no API key)."""
from __future__ import annotations

import pytest
import requests


def rest(demo) -> str:
    return f"http://localhost:{demo.record.front_ends['rest'][1]}"


@pytest.mark.parametrize("path, body, param", [
    ("/mii/demo", {"prompts": ["x"], "top_k": 2**40}, "top_k"),
    ("/mii/demo", {"prompts": ["x"], "bogus": 1}, "bogus"),
    ("/mii/demo", {"prompts": ["x"], "stop": ["s"] * 65}, "stop"),
    ("/v1/completions", {"model": "demo", "prompt": "x", "user": 123}, "user"),
    ("/v1/completions", {"model": "demo", "prompt": "x", "best_of": True}, "best_of"),
    ("/v1/completions", {"model": "demo", "prompt": "x", "temperature": "hot"}, "temperature"),
])
def test_an_error_names_its_field_in_param_and_code(demo, path, body, param):
    answer = requests.post(f"{rest(demo)}{path}", json=body, timeout=60)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and error["code"] == f"invalid_{param}", error


def test_an_error_about_no_one_field_has_a_null_param(demo):
    answer = requests.post(f"{rest(demo)}/mii/demo", json={"prompts": ["x"] * 0}, timeout=60)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert "param" in error and error["param"] is None and error["code"] != "invalid", error
