"""The gateway as uvicorn serves it (gateway.__main__): over real HTTP to a real control plane. The client address
it forwards (X-Forwarded-For honoured only from trusted proxies), body limits and percent-decoding on a real socket,
and access logs that never show a token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from gateway.__main__ import build_server
from gateway.log_redaction import redact
from gateway.settings import GatewaySettings
from protos.auth import CLIENT_ADDRESS_KEY
from tests.helpers.stack import REPO_ROOT
from tests.helpers.live import LiveControlPlane, free_port, spy_on, start_gateway


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory):
    running = LiveControlPlane(tmp_path_factory.mktemp("gateway-server")).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def gateway(control_plane):
    running = start_gateway(control_plane)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def auth(gateway, control_plane) -> dict[str, str]:
    reply = httpx.post(f"{gateway.base_url}/api/auth/login",
                       json={"username": "admin", "password": control_plane.admin_password}, timeout=30)
    return {"authorization": f"Bearer {reply.json()['token']}"}


def test_the_client_address_is_the_forwarded_one_only_behind_a_trusted_proxy(control_plane, gateway, auth, monkeypatch):
    untrusting = start_gateway(control_plane, gateway_trusted_proxies="192.0.2.1")
    try:
        for running, expected in ((gateway, "198.51.100.7"), (untrusting, "127.0.0.1")):
            calls = spy_on(running.app, monkeypatch)
            headers = {**auth, "x-forwarded-for": "198.51.100.7"}
            assert httpx.get(f"{running.base_url}/api/finetune/tasks", headers=headers, timeout=30).status_code == 200
            assert httpx.get(f"{running.base_url}/api/finetune/tasks?limit=0", headers=headers, timeout=30).status_code == 400
            assert httpx.get(f"{running.base_url}/api/health", timeout=30).status_code in (200, 503)
            assert calls == ["ListTasks", "AuthService.WhoAmI", "GetSystemHealth"]
            # (health sent no X-Forwarded-For: the peer itself)
            assert [m[CLIENT_ADDRESS_KEY] for m in calls.metadata] == [expected, expected, "127.0.0.1"]
    finally:
        untrusting.stop()


def test_a_forwarded_address_gRPC_cannot_carry_is_left_out(gateway, auth, monkeypatch):
    calls = spy_on(gateway.app, monkeypatch)
    headers = {b"authorization": auth["authorization"].encode(), b"x-forwarded-for": b"\xe9vil\x7f"}
    assert httpx.get(f"{gateway.base_url}/api/finetune/tasks", headers=headers, timeout=30).status_code == 200
    assert calls == ["ListTasks"] and CLIENT_ADDRESS_KEY not in calls.metadata[0]


def test_the_trusted_proxies_setting(monkeypatch):
    assert GatewaySettings().gateway_trusted_proxies == "127.0.0.1,::1"
    monkeypatch.setenv("BUGAGARIC_GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8")
    config = build_server(GatewaySettings(gateway_port=free_port())).config
    assert config.proxy_headers is True and config.forwarded_allow_ips == "10.0.0.0/8"


def test_a_5_mb_login_body_is_413_over_http(gateway):
    body = json.dumps({"username": "admin", "password": "x" * 5_000_000})
    resp = httpx.post(f"{gateway.base_url}/api/auth/login", content=body, timeout=30)
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"]["code"] == "payload_too_large"


def test_a_chunked_body_over_the_limit_is_413_over_http(gateway, auth):
    def chunks():
        yield b'{"type": "sft", "config": {"x": "'
        for _ in range(64):
            yield b"y" * 65536
        yield b'"}}'

    resp = httpx.post(f"{gateway.base_url}/api/finetune/start", content=chunks(), headers=auth, timeout=30)
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"]["code"] == "payload_too_large"
    # The connection pool and the server are fine afterwards.
    assert httpx.get(f"{gateway.base_url}/api/finetune/tasks", headers=auth, timeout=30).status_code == 200


@pytest.mark.parametrize(
    ("url", "field"),
    [("/api/users/%ED%A0%80", "username"), ("/api/finetune/tasks/%ED%A0%80", "task_id"),
     ("/api/finetune/tasks/%ED%A0%80/logs", "task_id"), ("/api/finetune/tasks?type=%ED%A0%80", "type"),
     ("/api/finetune/templates/%ED%A0%80", "template_id"), ("/api/finetune/tasks/a%00b", "task_id"),
     ("/api/finetune/tasks/t1/artifacts/sub/%ED%A0%80/x", "path"), ("/api/finetune/tasks/t%00/artifacts/a/b", "task_id")],
)
def test_invalid_utf8_in_the_url_is_400_over_http(gateway, auth, url, field):
    method = "DELETE" if "/users/" in url or "/templates/" in url else "GET"
    resp = httpx.request(method, f"{gateway.base_url}{url}", headers=auth, timeout=30)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["field"] == field


def test_redact_hides_credential_like_query_values():
    line = '127.0.0.1:5 - "GET /api/x/logs/stream?access_token=abc.def&after_seq=3&api_key=K1&Token=T&x=1 HTTP/1.1" 400'
    assert redact(line) == ('127.0.0.1:5 - "GET /api/x/logs/stream?access_token=[redacted]&after_seq=3'
                            '&api_key=[redacted]&Token=[redacted]&x=1 HTTP/1.1" 400')
    assert redact("/p?access%5Ftoken=abc") == "/p?access%5Ftoken=[redacted]"
    assert redact("/api/finetune/tasks?limit=5&offset=0") == "/api/finetune/tasks?limit=5&offset=0"


def test_the_access_log_of_python_m_gateway_shows_no_token(control_plane, tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "BUGAGARIC_GATEWAY_PORT": str(port),
           "BUGAGARIC_OPENAI_PORT": str(free_port()), "BUGAGARIC_CONTROL_PLANE_ADDRESS": control_plane.address}
    log_path = tmp_path / "gateway.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=tmp_path, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/api/health", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(log_path.read_text(errors="replace"))
                time.sleep(0.2)
        secret = "s3cr3t-token-value"
        for url in (f"/api/finetune/tasks/t1/logs/stream?access_token={secret}",
                    f"/api/health?access_token={secret}&x=1", f"/api/health?api_key={secret}",
                    f"/api/finetune/tasks?token={secret}"):
            assert httpx.get(f"{base}{url}", timeout=10).status_code < 500
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    log = log_path.read_text(errors="replace")
    assert "/api/health?access_token=[redacted]&x=1" in log, log
    assert secret not in log
