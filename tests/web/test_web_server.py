"""digitserve web's HTTP server: routes, content types, caching, and no way out of its folders."""

from __future__ import annotations

import http.client
import json
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.commands import DIGITSERVE, clean_env
from tests.support.server import Servers
from tests.web.in_process import RunningServer

SECRET = "top secret, outside every served folder"
IDLE_CONNECTIONS = 500


def manifest(version: int, tfjs: bool = True) -> dict[str, object]:
    artifacts: dict[str, object] = {"onnx": {"path": "onnx/model.onnx", "sha256": "ab" * 32}}
    if tfjs:
        artifacts["tfjs"] = {"path": "tfjs/model.json", "sha256": "cd" * 32,
                             "files": ["model.json", "group1-shard1of1.bin"]}
    return {"schema_version": 1, "name": "digits", "version": version,
            "model": {"architecture": "softmax", "test_accuracy": 0.9123},
            "artifacts": artifacts}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """digits/1 exported with TF.js, digits/2 exported without, digits/3 trained only;
    a staging folder; a secret file beside the repository and symlinks pointing at it."""
    root = tmp_path / "models"
    for version in (1, 2, 3):
        (root / "digits" / str(version)).mkdir(parents=True)
        (root / "digits" / str(version) / "model.keras").write_bytes(b"PK\x03\x04keras")
    tfjs = root / "digits" / "1" / "tfjs"
    tfjs.mkdir()
    (tfjs / "model.json").write_text('{"format": "graph-model"}')
    (tfjs / "group1-shard1of1.bin").write_bytes(bytes(range(256)))
    for version, has_tfjs in ((1, True), (2, False)):
        (root / "digits" / str(version) / "manifest.json").write_text(
            json.dumps(manifest(version, has_tfjs)))
    staging = root / "digits" / ".staging-abc"
    staging.mkdir()
    (staging / "model.keras").write_bytes(b"half written")
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    (root / "digits" / "1" / "leak.txt").symlink_to(secret)
    (root / "digits" / "outside").symlink_to(tmp_path)
    (root / "digits" / "1" / "inside.bin").symlink_to(tfjs / "group1-shard1of1.bin")
    return root


@pytest.fixture
def server(repo: Path, start_server: Callable[..., RunningServer],
           tfjs_dist: Path) -> RunningServer:
    return start_server(repo, tfjs_dist=tfjs_dist)


def request(server: RunningServer, path: str, method: str = "GET",
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """Send the path exactly as given (no client-side normalisation)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            connection.putheader(key, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(("path", "content_type"), [
    ("/", "text/html; charset=utf-8"),
    ("/index.html", "text/html; charset=utf-8"),
    ("/static/app.js", "text/javascript; charset=utf-8"),
    ("/static/preprocess.js", "text/javascript; charset=utf-8"),
    ("/static/style.css", "text/css; charset=utf-8"),
    ("/static/favicon.svg", "image/svg+xml"),
    ("/vendor/tfjs/tf.min.js", "text/javascript; charset=utf-8"),
    ("/api/latest", "application/json"),
    ("/models/digits/1/manifest.json", "application/json"),
    ("/models/digits/1/tfjs/model.json", "application/json"),
    ("/models/digits/1/tfjs/group1-shard1of1.bin", "application/octet-stream"),
    ("/models/digits/1/model.keras", "application/octet-stream"),
])
def test_content_types(server: RunningServer, path: str, content_type: str) -> None:
    status, headers, body = request(server, path)
    assert status == 200, body
    assert headers["content-type"] == content_type
    assert headers["content-length"] == str(len(body)) and body
    assert headers["x-content-type-options"] == "nosniff"


def test_png_is_served_as_png(server: RunningServer, repo: Path) -> None:
    (repo / "digits" / "1" / "train").mkdir()
    (repo / "digits" / "1" / "train" / "curves.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    status, headers, _ = request(server, "/models/digits/1/train/curves.png")
    assert (status, headers["content-type"]) == (200, "image/png")


@pytest.mark.parametrize(("path", "cache_control"), [
    ("/", "no-cache"),
    ("/static/app.js", "no-cache"),
    ("/vendor/tfjs/tf.min.js", "no-cache"),
    ("/api/latest", "no-cache"),
    ("/models/digits/1/manifest.json", "no-cache"),
    ("/models/digits/1/tfjs/model.json?sha256=ab12", "public, max-age=31536000, immutable"),
    ("/models/digits/1/tfjs/group1-shard1of1.bin?sha256=ab12", "public, max-age=31536000, immutable"),
    ("/models/digits/1/tfjs/model.json", "no-cache"),  # a plain URL: a re-export rewrites it in place
    ("/models/digits/1/manifest.json?sha256=ab12", "no-cache"),
    ("/models/digits/3/model.keras", "no-cache"),  # not exported yet: may still change
])
def test_caching_headers(server: RunningServer, path: str, cache_control: str) -> None:
    status, headers, _ = request(server, path)
    assert status == 200
    assert headers["cache-control"] == cache_control


def test_etag_revalidation_answers_304(server: RunningServer) -> None:
    _, headers, body = request(server, "/static/app.js")
    status, again, rebody = request(server, "/static/app.js",
                                    headers={"If-None-Match": headers["etag"]})
    assert (status, rebody) == (304, b"")
    assert again["etag"] == headers["etag"] and body


def test_page_has_a_same_origin_content_security_policy(server: RunningServer) -> None:
    _, headers, body = request(server, "/")
    assert "default-src 'self'" in headers["content-security-policy"]
    assert b"/vendor/tfjs/tf.min.js" in body and b"http" not in body.split(b"<footer>")[0]


def test_head_sends_headers_only(server: RunningServer) -> None:
    _, get_headers, body = request(server, "/models/digits/1/tfjs/group1-shard1of1.bin")
    status, headers, head_body = request(server, "/models/digits/1/tfjs/group1-shard1of1.bin",
                                         method="HEAD")
    assert (status, head_body) == (200, b"")
    assert headers["content-length"] == get_headers["content-length"] == str(len(body))


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_only_get_and_head(server: RunningServer, method: str) -> None:
    status, headers, _ = request(server, "/models/digits/1/manifest.json", method=method)
    assert status == 405
    assert headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", [
    "/models/../secret.txt",
    "/models/digits/../../secret.txt",
    "/static/../cli.py",
    "/static/../../pyproject.toml",
    "/models/%2e%2e/secret.txt",
    "/models/%2E%2E/%2E%2E/pyproject.toml",
    "/static/..%2f..%2fpyproject.toml",
    "/static/%2e%2e%2fserver.py",
    "/models/digits%2f1%2fmanifest.json",
    "/models/..%5csecret.txt",
    "/models/%252e%252e/secret.txt",
    "/models/digits/1/%00manifest.json",
    "/models/%ff%fe",
    "//etc/passwd",
    "/models//etc/passwd",
    "/models/%2fetc%2fpasswd",
    "/static//etc/passwd",
    "/etc/passwd",
    "/models/digits/1/leak.txt",
    "/models/digits/outside/secret.txt",
    "/models/digits/.staging-abc/model.keras",
    "/models/digits/1/",
    "/models",
    "/static/",
    "/vendor/tfjs/tf.js",
    "/vendor/tfjs/../../package.json",
    "/api/latest/x",
    "/nothing-here",
    "http://127.0.0.1/models/../secret.txt",
    "*",
])
def test_nothing_outside_the_served_folders(server: RunningServer, path: str) -> None:
    status, _, body = request(server, path)
    assert status == 404, path
    assert SECRET.encode() not in body


def test_symlink_inside_the_repository_is_followed(server: RunningServer) -> None:
    status, _, body = request(server, "/models/digits/1/inside.bin")
    assert (status, body) == (200, bytes(range(256)))


def test_latest_is_newest_complete_version_with_tfjs(server: RunningServer) -> None:
    status, _, body = request(server, "/api/latest")
    latest = json.loads(body)
    assert status == 200
    assert (latest["name"], latest["version"], latest["test_accuracy"]) == ("digits", 1, 0.9123)
    assert latest["model_url"] == "/models/digits/1/tfjs/model.json?sha256=" + "cd" * 32
    assert latest["manifest"]["version"] == 1
    assert request(server, latest["model_url"])[0] == 200  # the query string is ignored


def test_latest_reports_a_missing_repository(tmp_path: Path,
                                             start_server: Callable[..., RunningServer]) -> None:
    server = start_server(tmp_path / "nowhere")
    status, headers, body = request(server, "/api/latest")
    assert (status, headers["content-type"]) == (503, "application/json")
    assert "digitserve train" in json.loads(body)["error"]


def test_latest_reports_broken_manifests_and_files(
    repo: Path, start_server: Callable[..., RunningServer]
) -> None:
    server = start_server(repo)
    (repo / "digits" / "1" / "tfjs" / "model.json").unlink()
    status, _, body = request(server, "/api/latest")
    assert status == 503 and "missing" in json.loads(body)["error"]
    (repo / "digits" / "2" / "manifest.json").write_text("{not json")
    status, _, body = request(server, "/api/latest")
    assert status == 503 and "not valid JSON" in json.loads(body)["error"]


def test_no_tfjs_anywhere(repo: Path, start_server: Callable[..., RunningServer]) -> None:
    (repo / "digits" / "1" / "manifest.json").write_text(json.dumps(manifest(1, tfjs=False)))
    status, _, body = request(start_server(repo), "/api/latest")
    assert status == 503 and "--formats tfjs" in json.loads(body)["error"]


def test_missing_tfjs_package_is_404(repo: Path,
                                     start_server: Callable[..., RunningServer]) -> None:
    assert request(start_server(repo, tfjs_dist=None), "/vendor/tfjs/tf.min.js")[0] == 404


def test_cli_serves_and_stops_on_sigterm(repo: Path, servers: Servers) -> None:
    process = servers.start([*DIGITSERVE, "web", "--port", "0", "--repo", str(repo)],
                            clean_env(PYTHONUNBUFFERED="1"))
    match = process.wait_for_log(r"http://127\.0\.0\.1:(\d+)/")
    assert match, process.log()
    connection = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=10)
    connection.request("GET", "/api/latest")
    assert json.loads(connection.getresponse().read())["version"] == 1
    connection.close()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0


def process_threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


def test_idle_connections_take_no_thread(repo: Path, servers: Servers) -> None:
    """500 idle TCP connections held open: the page and /api/latest still load, every idle
    connection is still open, and the server has not started a thread for each."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * IDLE_CONNECTIONS + 256  # this process' sockets, and the server's (it inherits the limit)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.fail(f"RLIMIT_NOFILE's hard limit {hard} is below the {wanted} files this test needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    idle: list[socket.socket] = []
    try:
        process = servers.start([*DIGITSERVE, "web", "--port", "0", "--repo", str(repo)],
                                clean_env(PYTHONUNBUFFERED="1"))
        port = int(process.wait_for_log(r"http://127\.0\.0\.1:(\d+)/").group(1))
        for _ in range(IDLE_CONNECTIONS):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        # accepted in order: once these are answered, the idle ones before them are accepted too
        for path, expected in (("/", b"<canvas"), ("/api/latest", b'"version": 1')):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            connection.request("GET", path)
            response = connection.getresponse()
            assert (response.status, expected in response.read()) == (200, True), path
            connection.close()
        for sock in idle:  # nothing to read and not closed: each is still held open
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
        threads = process_threads(process.process.pid)
        print(f"\n{IDLE_CONNECTIONS} idle connections held: the server runs {threads} threads")
        assert threads < IDLE_CONNECTIONS // 5
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, process.log()
    finally:
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_cli_port_in_use_is_a_usage_error(server: RunningServer, repo: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "digitserve", "web", "--port", str(server.port), "--repo",
         str(repo)], capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 2
    assert f"port {server.port} on 127.0.0.1 is in use" in done.stderr


@pytest.mark.parametrize("command", ["web", "serve"])
def test_a_port_out_of_range_is_a_usage_error(command: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "digitserve", command, "--port", "70000"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--port: must be a TCP port, 0 to 65535, got 70000" in done.stderr
    assert "Traceback" not in done.stderr
