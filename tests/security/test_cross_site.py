"""A web page in the user's browser cannot drive a local deployment (issue 22, row 4): bodies must be JSON
(no simple cross-site POST), the Host must name the loopback (DNS rebinding), no CORS header is sent, and
/terminate takes only POST. Against the shared demo deployment (no API key), which must keep serving."""
from __future__ import annotations

import http.client

import requests

GREEDY = {"do_sample": False, "max_new_tokens": 2}


def rest_port(client) -> int:
    return client.record.front_ends["rest"][1]


def raw_request(port: int, method: str, path: str, body: bytes, headers: dict) -> tuple[int, dict, bytes]:
    """A request whose Host and Content-Type headers are exactly as given (as a browser would send them)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.putrequest(method, path, skip_host=True)
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def test_a_simple_cross_site_post_is_refused(demo):
    status, headers, body = raw_request(rest_port(demo), "POST", "/mii/demo", b'{"prompts": ["river"]}',
                                        {"Host": f"localhost:{rest_port(demo)}", "Content-Type": "text/plain",
                                         "Origin": "http://evil.example"})
    assert status == 415 and b"application/json" in body
    assert not any(name.lower().startswith("access-control-") for name in headers), "no CORS header, ever"


def test_a_rebound_host_name_is_refused(demo):
    status, _, body = raw_request(rest_port(demo), "POST", "/mii/demo", b'{"prompts": ["river"]}',
                                  {"Host": f"attacker.example:{rest_port(demo)}", "Content-Type": "application/json"})
    assert status == 400 and b"bad_host" in body
    status, _, body = raw_request(rest_port(demo), "GET", "/v1/models", b"", {"Host": "attacker.example"})
    assert status == 400 and b"bad_host" in body


def test_terminate_takes_only_post_and_the_deployment_keeps_serving(demo):
    url = f"http://localhost:{rest_port(demo)}"
    refused = requests.get(f"{url}/terminate", headers={"Origin": "http://evil.example"})
    assert refused.status_code == 405 and "POST" in refused.json()["error"]["message"]
    status, _, _ = raw_request(rest_port(demo), "POST", "/terminate", b"{}",
                               {"Host": f"localhost:{rest_port(demo)}", "Content-Type": "text/plain"})
    assert status == 415
    answer = requests.post(f"{url}/mii/demo", json={"prompts": ["river"], **GREEDY})
    assert answer.status_code == 200 and len(answer.json()) == 1, "the deployment still serves"
