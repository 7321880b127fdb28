"""digitserve.wire.tls: targets, PEM files and TLS settings, checked once for both sides and both CLIs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from digitserve.cli import main
from digitserve.client import TLS, Client, ClientError
from digitserve.errors import DigitserveError
from digitserve.wire.tls import check_target, host_port, read_pem, server_credentials

ACCEPTED = [
    "localhost:50051",
    "127.0.0.1:1",
    "10.0.0.7:65535",
    "[::1]:50051",
    "[::]:8000",
    "dns:///digits.example:443",
    "dns://8.8.8.8/digits.example:443",
    "dns:digits.example:50051",
    "ipv4:10.0.0.1:50051,10.0.0.2:50051",
    "ipv6:[::1]:50051",
    "unix:/run/digitserve.sock",
    "unix:///run/digitserve.sock",
    "unix-abstract:digitserve",
]
REJECTED = {
    "localhost": "'localhost' has no port: add one, as in localhost:50051",
    "host:": "'host:' has no port",
    ":50051": "':50051' names no host",
    "127.0.0.1:http": "the port must be a number, got 'http'",
    "127.0.0.1:0": "port 0 is out of range: give a port from 1 to 65535",
    "127.0.0.1:70000": "port 70000 is out of range: give a port from 1 to 65535",
    "::1:50051": "put an IPv6 address in brackets, as in [::1]:50051",
    "[::1]": "has no port: add one, as in [::1]:50051",
    "[::1]50051": "write an IPv6 address as [IP]:PORT",
    "dns://digits.example:443": "write dns:///HOST:PORT",
    "dns:///digits.example:99999": "port 99999 is out of range",
    "ipv4:10.0.0.1:50051,10.0.0.2": "'ipv4:10.0.0.1:50051,10.0.0.2' has no port",
    "unix:": "names no socket: write unix:PATH",
}


@pytest.mark.parametrize("target", ACCEPTED)
def test_accepted_targets_come_back_unchanged(target: str) -> None:
    assert check_target(target) == target


@pytest.mark.parametrize("target", REJECTED)
def test_rejected_targets_say_what_to_fix(target: str) -> None:
    with pytest.raises(ValueError) as error:
        check_target(target)
    assert REJECTED[target] in str(error.value)


@pytest.mark.parametrize("target", ["127.0.0.1:70000", "localhost", "[::1]"])
def test_both_commands_reject_a_target_alike(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    errors = []
    for command in (["health"], ["classify", "--mnist-test", "1"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--target", target])
        assert exit_info.value.code == 2
        errors.append(capsys.readouterr().err.strip().splitlines()[-1].partition(": error: ")[2])
    assert errors[0] == errors[1]
    assert errors[0].startswith(f"argument --target: {target!r}") and REJECTED[target] in errors[0]
    assert "--target must be HOST:PORT, [IPV6]:PORT or a gRPC URI" in errors[0]


def test_a_bad_target_from_the_environment_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DIGITSERVE_TARGET", "127.0.0.1:99999")
    with pytest.raises(SystemExit) as exit_info:
        main(["classify", "--mnist-test", "1"])
    assert exit_info.value.code == 2
    assert "DIGITSERVE_TARGET='127.0.0.1:99999': '127.0.0.1:99999': port 99999" in capsys.readouterr().err


def test_host_port_brackets_ipv6() -> None:
    assert host_port("127.0.0.1", 50051) == "127.0.0.1:50051"
    assert host_port("0.0.0.0", 0) == "0.0.0.0:0"
    assert host_port("::", 8000) == "[::]:8000"
    assert check_target(host_port("::1", 50051)) == "[::1]:50051"


def test_unreadable_pem_files_name_the_file_and_its_role(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    with pytest.raises(DigitserveError, match=f"^cannot read the CA bundle {missing}: No such file or directory$"):
        read_pem(missing, "CA bundle")
    with pytest.raises(DigitserveError, match=f"cannot read the client key {tmp_path}: Is a directory"):
        read_pem(tmp_path, "client key")
    (tmp_path / "real.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    assert read_pem(str(tmp_path / "real.pem"), "anything") == b"-----BEGIN CERTIFICATE-----\n"


def test_client_tls_reads_its_files_once_asked_for_credentials(tmp_path: Path) -> None:
    missing = tmp_path / "client.pem"
    with pytest.raises(DigitserveError, match=f"cannot read the client certificate {missing}"):
        TLS(client_certificate=missing, client_key=b"key").credentials()
    with pytest.raises(DigitserveError, match="client_certificate and client_key go together"):
        TLS(client_key=b"key").credentials()
    assert isinstance(TLS(root_certificates=b"pem bytes").credentials(), grpc.ChannelCredentials)
    assert TLS(server_name="localhost").options() == [("grpc.ssl_target_name_override", "localhost")]
    assert TLS().options() == []
    # the client raises its own error class, with the same message
    with pytest.raises(ClientError, match=f"cannot read the CA bundle {tmp_path / 'ca.pem'}"):
        Client(tls=TLS(root_certificates=tmp_path / "ca.pem"))


def test_server_credentials_name_each_missing_file(tmp_path: Path) -> None:
    present = tmp_path / "present.pem"
    present.write_bytes(b"pem")
    with pytest.raises(DigitserveError, match="cannot read the TLS key"):
        server_credentials(present, tmp_path / "server.key")
    with pytest.raises(DigitserveError, match="cannot read the TLS certificate"):
        server_credentials(tmp_path / "server.pem", present)
    with pytest.raises(DigitserveError, match=f"cannot read the client CA {tmp_path / 'ca.pem'}"):
        server_credentials(present, present, tmp_path / "ca.pem")


@pytest.mark.parametrize("command", [["health"], ["classify", "--mnist-test", "1"]])
def test_both_commands_check_the_tls_flags_alike(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--tls-server-name", "localhost"])
    assert exit_info.value.code == 2 and "need --tls-ca (or --tls" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--tls", "--tls-client-cert", "client.pem"])
    assert exit_info.value.code == 2 and "go together" in capsys.readouterr().err


def test_classify_names_an_unreadable_ca_bundle(mnist_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["classify", "--mnist-test", "1", "--data", str(mnist_dir), "--tls-ca", "/nonexistent/ca.pem"])
    assert code == 1
    assert "cannot read the CA bundle /nonexistent/ca.pem" in capsys.readouterr().err


def test_building_the_commands_loads_no_grpc() -> None:
    """Options are checked before grpc loads, so `--help` and usage errors stay instant."""
    probe = (
        "import sys; from digitserve.cli import build_parser\n"
        "for command in ('health', 'classify'): build_parser(command).parse_args([command, '--target', 'h:1'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_uri_forms_it_accepts_reach_a_server(capsys: pytest.CaptureFixture[str]) -> None:
    from concurrent import futures

    from grpc_health.v1 import health, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        for target in (f"dns:///localhost:{port}", f"ipv4:127.0.0.1:{port}", f"dns:127.0.0.1:{port}"):
            assert main(["health", "--target", check_target(target), "--timeout", "5"]) == 0
            assert capsys.readouterr().out.strip() == f"{target}: SERVING"
    finally:
        server.stop(None)
