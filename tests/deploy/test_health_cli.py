"""`digitserve health` against real gRPC servers on 127.0.0.1: each status, each failure, TLS.

The container healthchecks (Dockerfile HEALTHCHECK, compose healthcheck, a Kubernetes exec probe
under TLS) rely on exactly this: exit 0 for SERVING, 1 for anything else, one line saying why.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from digitserve.cli import main
from tests.support.certs import Certificates
from tests.support.commands import VENV_BIN, clean_env
from tests.support.ports import free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class HealthServer:
    port: int
    servicer: health.HealthServicer

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_health_server(credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, HealthServer]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    address = "127.0.0.1:0"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    server.start()
    return server, HealthServer(port, servicer)


@pytest.fixture
def health_server() -> Iterator[HealthServer]:
    server, handle = start_health_server()
    yield handle
    server.stop(None)


def run_health(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["health", *args])
    captured = capsys.readouterr()
    return code, captured.out.strip(), captured.err.strip()


def test_serving_exits_0_and_says_so(health_server: HealthServer, capsys: pytest.CaptureFixture[str]) -> None:
    health_server.servicer.set("", SERVING)
    code, out, err = run_health(capsys, "--target", health_server.target)
    assert (code, out, err) == (0, f"{health_server.target}: SERVING", "")


def test_not_serving_exits_1_and_names_the_status(
    health_server: HealthServer, capsys: pytest.CaptureFixture[str]
) -> None:
    health_server.servicer.set("", NOT_SERVING)
    code, out, err = run_health(capsys, "--target", health_server.target)
    assert (code, out) == (1, "")
    assert err == f"{health_server.target}: NOT_SERVING"
    assert len(err.splitlines()) == 1


def test_each_service_is_checked_on_its_own(health_server: HealthServer, capsys: pytest.CaptureFixture[str]) -> None:
    health_server.servicer.set("", NOT_SERVING)
    health_server.servicer.set("digits.v1.Classifier", SERVING)
    code, out, _ = run_health(capsys, "--target", health_server.target, "--service", "digits.v1.Classifier")
    assert code == 0 and out.endswith("service 'digits.v1.Classifier': SERVING")
    code, _, err = run_health(capsys, "--target", health_server.target)
    assert code == 1 and err.endswith("NOT_SERVING")


def test_unknown_service_exits_1(health_server: HealthServer, capsys: pytest.CaptureFixture[str]) -> None:
    health_server.servicer.set("", SERVING)
    code, _, err = run_health(capsys, "--target", health_server.target, "--service", "no.such.Service")
    assert code == 1
    assert "unknown service" in err and "no.such.Service" in err


def test_nothing_listening_exits_1_with_the_connection_error(capsys: pytest.CaptureFixture[str]) -> None:
    target = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    code, _, err = run_health(capsys, "--target", target, "--timeout", "5")
    assert code == 1
    assert err.startswith(f"{target}: cannot check health: UNAVAILABLE")
    assert time.monotonic() - started < 4, "a refused connection should fail at once, not at the deadline"


def test_a_server_that_never_answers_fails_at_the_deadline(capsys: pytest.CaptureFixture[str]) -> None:
    """A hung process: it accepts TCP connections and never speaks HTTP/2."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        accepted: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            listener.settimeout(0.1)
            while not stop.is_set():
                try:
                    accepted.append(listener.accept()[0])
                except OSError:
                    continue

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            started = time.monotonic()
            code, _, err = run_health(capsys, "--target", f"127.0.0.1:{listener.getsockname()[1]}",
                                      "--timeout", "0.5")
            elapsed = time.monotonic() - started
        finally:
            stop.set()
            thread.join(5)
            for conn in accepted:
                conn.close()
    assert code == 1
    assert err.endswith("no answer within 0.5 s"), err
    assert elapsed < 3


def test_settings_come_from_the_environment(
    health_server: HealthServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    health_server.servicer.set("", SERVING)
    monkeypatch.setenv("DIGITSERVE_PORT", str(health_server.port))  # the server's port: the default target
    code, out, _ = run_health(capsys)
    assert code == 0 and out == f"{health_server.target}: SERVING"
    monkeypatch.setenv("DIGITSERVE_TARGET", f"127.0.0.1:{free_port()}")  # --target's own variable wins
    code, _, err = run_health(capsys)
    assert code == 1 and "UNAVAILABLE" in err


@pytest.mark.parametrize("target", ["localhost", "127.0.0.1:http", ":50051", "host:", "127.0.0.1:70000"])
def test_a_malformed_target_is_a_usage_error(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["health", "--target", target])
    assert exit_info.value.code == 2
    assert "--target must be HOST:PORT" in capsys.readouterr().err


def test_the_installed_command_exits_0_and_1(health_server: HealthServer) -> None:
    """What Docker's HEALTHCHECK runs: the `digitserve` script, as a process."""
    executable = str(VENV_BIN / "digitserve")
    health_server.servicer.set("", SERVING)
    ok = subprocess.run([executable, "health", "--target", health_server.target],
                        capture_output=True, text=True, env=clean_env(), timeout=60)
    assert ok.returncode == 0, ok.stderr
    health_server.servicer.set("", NOT_SERVING)
    bad = subprocess.run([executable, "health", "--target", health_server.target],
                         capture_output=True, text=True, env=clean_env(), timeout=60)
    assert bad.returncode == 1 and bad.stderr.strip().endswith("NOT_SERVING")


# -- TLS -------------------------------------------------------------------------------------------
def test_tls_server_with_its_ca(certificates: Certificates, capsys: pytest.CaptureFixture[str]) -> None:
    credentials = grpc.ssl_server_credentials(
        [(certificates.server_key.read_bytes(), certificates.server_cert.read_bytes())]
    )
    server, handle = start_health_server(credentials)
    try:
        handle.servicer.set("", SERVING)
        code, out, _ = run_health(capsys, "--target", handle.target, "--tls-ca", str(certificates.ca))
        assert code == 0 and out.endswith("SERVING")
        # the certificate names localhost too: verify against that name over 127.0.0.1
        code, _, _ = run_health(capsys, "--target", handle.target, "--tls-ca", str(certificates.ca),
                                "--tls-server-name", "localhost")
        assert code == 0
        code, _, err = run_health(capsys, "--target", handle.target, "--timeout", "2")
        assert code == 1 and "UNAVAILABLE" in err, "plaintext against a TLS server must fail"
        code, _, err = run_health(capsys, "--target", handle.target, "--tls-ca", str(certificates.ca),
                                  "--tls-server-name", "someone-else", "--timeout", "2")
        assert code == 1, "a certificate for another name must be refused"
    finally:
        server.stop(None)


def test_mutual_tls_needs_the_client_certificate(
    certificates: Certificates, capsys: pytest.CaptureFixture[str]
) -> None:
    credentials = grpc.ssl_server_credentials(
        [(certificates.server_key.read_bytes(), certificates.server_cert.read_bytes())],
        root_certificates=certificates.ca.read_bytes(), require_client_auth=True,
    )
    server, handle = start_health_server(credentials)
    try:
        handle.servicer.set("", SERVING)
        tls = ["--target", handle.target, "--tls-ca", str(certificates.ca), "--timeout", "3"]
        code, _, _ = run_health(capsys, *tls, "--tls-client-cert", str(certificates.client_cert),
                                "--tls-client-key", str(certificates.client_key))
        assert code == 0
        code, _, err = run_health(capsys, *tls)
        assert code == 1 and "UNAVAILABLE" in err
    finally:
        server.stop(None)


def test_tls_options_are_checked(certificates: Certificates, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["health", "--tls-client-cert", str(certificates.client_cert)])
    assert exit_info.value.code == 2
    assert "need --tls-ca" in capsys.readouterr().err
    code = main(["health", "--tls-ca", "/nonexistent/ca.pem"])
    assert code == 1
    assert "cannot read the CA bundle /nonexistent/ca.pem" in capsys.readouterr().err
