"""The HTTP/REST listener through the server's life: loading, the drain, TLS, explicit model control,
start errors, and a real `digitserve serve --http-port` process through SIGTERM."""

from __future__ import annotations

import json
import logging
import signal
import socket
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from digitserve.cli import build_parser
from digitserve.errors import DigitserveError
from digitserve.serve.cli import settings_from_args
from digitserve.serve.dataplane import State
from tests.serve.in_process import ServerThread, server_settings
from tests.serve.serve_models import random_weights, write_version
from tests.support.certs import Certificates
from tests.support.server import Servers

INFER = "/v2/models/digits/infer"
ONE = {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 784], "data": [200] * 784}]}
SHUTTING_DOWN = "the server is shutting down; retry on another replica"


def url(server: ServerThread, scheme: str = "http", host: str = "127.0.0.1") -> str:
    return f"{scheme}://{host}:{server.server.http.port}"


def wait(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.01)


def test_while_loading_live_but_not_ready_and_calls_get_503_retry_after(
    make_server: Callable[..., ServerThread], model_repo: Path
) -> None:
    server = make_server(server_settings(model_repo, http_port=0), load=False)
    with httpx.Client(base_url=url(server), timeout=30) as client:
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/models/digits/ready").json() == {"name": "digits", "ready": False}
        refused = client.post(INFER, json=ONE)
        assert (refused.status_code, refused.headers["retry-after"]) == (503, "1")
        assert "still loading" in refused.json()["error"]
        server.call(server.server.load())
        assert client.get("/v2/health/ready").status_code == 200
        assert client.post(INFER, json=ONE).status_code == 200


def test_the_drain_answers_calls_in_flight_refuses_new_ones_then_closes_the_port(
    make_server: Callable[..., ServerThread], slow_repo: Path
) -> None:
    server = make_server(server_settings(slow_repo, http_port=0, max_batch_size=2, grace_seconds=30))
    port = server.server.http.port
    idle = socket.create_connection(("127.0.0.1", port))  # a keep-alive connection, idle during the drain
    idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while not answer.endswith(b'{"live":true}'):
        answer += idle.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200")
    with httpx.Client(base_url=url(server), timeout=60) as client, ThreadPoolExecutor(4) as pool:
        in_flight = [pool.submit(client.post, INFER, json=ONE) for _ in range(4)]
        server.wait_for("digitserve_inflight_calls", 4)
        stopping = server.submit(server.server.stop())
        with httpx.Client(base_url=url(server), timeout=10) as other:
            wait(lambda: server.server.plane.state is not State.SERVING, "the drain starts")
            assert other.get("/v2/health/ready").status_code == 503  # not ready from the drain's start
            wait(lambda: server.server.plane.state is State.CLOSED, "the drain refuses")
            refused = other.post(INFER, json=ONE)
        assert refused.status_code == 503 and refused.json() == {"error": SHUTTING_DOWN}
        assert refused.headers["retry-after"] == "1" and refused.headers["connection"] == "close"
        assert [f.result().status_code for f in in_flight] == [200] * 4  # none was cut
        stopping.result(30)
    idle.settimeout(10)
    assert idle.recv(4096) == b""  # the idle keep-alive connection was closed
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_while_draining_readiness_says_no_but_calls_are_answered(
    make_server: Callable[..., ServerThread], model_repo: Path
) -> None:
    server = make_server(server_settings(model_repo, http_port=0))

    async def report_not_ready() -> None:
        server.server.plane.report_not_ready()

    server.call(report_not_ready())
    with httpx.Client(base_url=url(server), timeout=30) as client:
        assert client.get("/v2/health/ready").json() == {"ready": False}
        assert client.get("/v2/models/digits/ready").status_code == 503
        assert client.post(INFER, json=ONE).status_code == 200


def test_https_and_mutual_tls(
    make_server: Callable[..., ServerThread], model_repo: Path, certificates: Certificates,
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = certificates
    caplog.set_level(logging.INFO, logger="digitserve")
    server = make_server(server_settings(model_repo, http_port=0, tls_cert=c.server_cert, tls_key=c.server_key,
                                         tls_client_ca=c.ca))
    assert f"KServe V2 HTTP on https://127.0.0.1:{server.server.http.port}" in caplog.text
    base = url(server, "https", "localhost")
    with_cert = ssl.create_default_context(cafile=c.ca)
    with_cert.load_cert_chain(c.client_cert, c.client_key)
    with httpx.Client(base_url=base, verify=with_cert, timeout=30) as client:
        assert client.post(INFER, json=ONE).status_code == 200
    with httpx.Client(base_url=base, verify=ssl.create_default_context(cafile=c.ca), timeout=30) as client:
        with pytest.raises(httpx.TransportError):  # no client certificate: refused in the handshake
            client.get("/v2/health/ready")
    with httpx.Client(base_url=url(server), timeout=30) as client:
        with pytest.raises(httpx.TransportError):  # plaintext against the TLS port
            client.get("/v2/health/ready")

    plain_tls = make_server(server_settings(model_repo, http_port=0, tls_cert=c.server_cert, tls_key=c.server_key))
    verify = ssl.create_default_context(cafile=c.ca)
    with httpx.Client(base_url=url(plain_tls, "https", "localhost"), verify=verify, timeout=30) as client:
        assert client.get("/v2/health/ready").status_code == 200


def test_explicit_model_control_over_http(make_server: Callable[..., ServerThread], own_repo: Path) -> None:
    w2 = random_weights(2)
    write_version(own_repo, 2, w2)
    server = make_server(server_settings(own_repo, http_port=0, model_control="explicit", version_policy="all"))
    x = np.random.default_rng(3).random((2, 784), dtype=np.float32)
    request = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [2, 784], "data": x.ravel().tolist()}]}
    with httpx.Client(base_url=url(server), timeout=60) as client:
        index = client.post("/v2/repository/index").json()
        assert [(e["version"], e["state"]) for e in index] == [("1", "READY"), ("2", "READY")]
        assert client.post("/v2/repository/models/digits/unload", json={"parameters": {"unload_dependents": False}}
                           ).status_code == 200
        assert client.get("/v2/models/digits/ready").status_code == 404  # no version of it is served now
        assert client.post(INFER, json=request).status_code == 404
        assert client.post("/v2/repository/index", json={"ready": True}).json() == []
        pin = client.post("/v2/repository/models/digits/load", json={"parameters": {"version": 2}})
        assert pin.status_code == 200, pin.text
        assert client.get("/v2/models/digits").json()["versions"] == ["2"]
        got = np.array(client.post(INFER, json=request).json()["outputs"][0]["data"], np.float32).reshape(2, 10)
        np.testing.assert_allclose(got, w2.predict(x), atol=1e-5)
        unknown = client.post("/v2/repository/models/letters/load")
        assert unknown.status_code == 404 and "letters" in unknown.json()["error"]
        missing = client.post("/v2/repository/models/digits/load", json={"parameters": {"version": 9}})
        assert missing.status_code == 404, missing.text
        bad = client.post("/v2/repository/models/digits/load", json={"parameters": {"version": "latest"}})
        assert bad.status_code == 400 and "parameters.version must be a version number" in bad.json()["error"]


def test_a_busy_http_port_is_a_clear_start_error(make_server: Callable[..., ServerThread], model_repo: Path) -> None:
    first = make_server(server_settings(model_repo, http_port=0))
    taken = first.server.http.port
    with pytest.raises(DigitserveError, match=f"cannot serve HTTP on 127.0.0.1:{taken} .*is the port in use"):
        make_server(server_settings(model_repo, http_port=taken), load=False)


def test_the_http_port_flag_and_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse(*argv: str) -> Any:
        return build_parser("serve").parse_args(list(argv))

    assert settings_from_args(parse("serve")).http_port is None  # off by default
    assert settings_from_args(parse("serve", "--http-port", "0")).http_port == 0
    monkeypatch.setenv("DIGITSERVE_HTTP_PORT", "8080")
    assert settings_from_args(parse("serve")).http_port == 8080
    assert settings_from_args(parse("serve", "--no-http")).http_port is None


def test_a_real_server_answers_every_http_call_sent_before_sigterm_and_exits_0(
    servers: Servers, slow_repo: Path
) -> None:
    process = servers.serve("--repo", str(slow_repo), "--http-port", "0", "--max-batch-size", "8").wait_serving()
    assert process.http_port and process.http_url.startswith("http://")
    calls = 24
    with httpx.Client(base_url=process.http_url, timeout=60, limits=httpx.Limits(max_connections=calls)) as client, \
            ThreadPoolExecutor(calls) as pool:
        answers = [pool.submit(client.post, INFER, json=ONE) for _ in range(calls)]
        deadline = time.monotonic() + 30
        while process.metric("digitserve_inflight_calls") < calls and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        codes = [future.result().status_code for future in answers]
    assert codes == [200] * calls, process.log()
    assert process.wait(60) == 0, process.log()
    assert "refusing new calls" in process.log()
    body = json.loads(answers[0].result().content)
    assert body["model_name"] == "digits"
