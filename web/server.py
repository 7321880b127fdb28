"""The drawing page's HTTP server: the page, TensorFlow.js and the model repository, read-only.

    /                       the page (web/static/index.html)
    /static/<file>          the page's scripts, styles and icon
    /vendor/tfjs/<file>     tf.min.js (+ .map) from the project's npm install
    /api/latest             JSON: the newest exported version with a TF.js model, its manifest
    /models/<name>/<v>/...  the model repository's files (manifest, tfjs/, onnx/, ...)

GET and HEAD only; anything else a path does not name is 404 (see paths.py for the checks).
Caching: the page, its scripts and every manifest are revalidated on each load (ETag). The
page asks for an exported version's files with the model's sha256 in the query, a URL whose
content never changes, so those answers are cached for a year; the same files under a plain URL
revalidate, since a re-export rewrites them in place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from digitserve.errors import ModelRepositoryError
from digitserve.repository import MANIFEST, ModelRepository
from digitserve.web.paths import TFJS_FILES, request_segments, resolve_file

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}
BINARY = "application/octet-stream"  # .bin weight shards, .onnx, .tflite, .keras and the rest
REVALIDATE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"
# tf.min.js runs `Function("return this")()` while loading (a bundled polyfill's way to find
# the global object), hence 'unsafe-eval'; everything else stays same-origin, no inline code.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class WebConfig:
    """What the server publishes: the model repository, one model name in it, TF.js."""

    repo: Path
    name: str
    tfjs_dist: Path | None = None
    static_dir: Path = STATIC_DIR


def latest_model(config: WebConfig) -> dict[str, Any]:
    """The newest complete version that has a TF.js export, as the page needs it.

    Raises ModelRepositoryError with a message for the page when there is none or its
    manifest or TF.js files are broken.
    """
    repository = ModelRepository(config.repo, config.name)
    complete = repository.complete_versions()
    if not complete:
        repository.latest_complete_version()  # raises the repository's own clear message
    for version in reversed(complete):
        manifest = repository.read_manifest(version)
        tfjs = manifest.artifacts.get("tfjs")
        if tfjs is None:
            continue  # exported without --formats tfjs: an older version may have it
        relative = tfjs.path
        segments = relative.split("/")
        where = repository.path(version)
        if resolve_file(where, segments) is None:
            raise ModelRepositoryError(
                f"{config.name} version {version}: its manifest names the TF.js model "
                f"{relative!r}, which is missing: run `digitserve export --version {version}` again"
            )
        base = f"/models/{quote(config.name)}/{version}"
        model_url = f"{base}/{quote(relative)}"
        # a re-export of this version gets a new URL, so the year-long cache cannot go stale
        model_url += f"?sha256={quote(tfjs.sha256)}"
        return {
            "name": config.name,
            "version": version,
            "test_accuracy": manifest.model.test_accuracy,
            "model_url": model_url,
            "manifest_url": f"{base}/{MANIFEST}",
            "manifest": manifest.to_json(),
        }
    raise ModelRepositoryError(
        f"no exported version of {config.name} in {config.repo} has a TF.js model: "
        "run `digitserve export --formats tfjs` (or all formats)"
    )


class Handler(BaseHTTPRequestHandler):
    """One request: route, check, answer. The server object carries the WebConfig."""

    server: WebServer
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return "digitserve-web"

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _refuse(self) -> None:
        self._send_bytes(HTTPStatus.METHOD_NOT_ALLOWED, b"only GET and HEAD\n",
                         "text/plain; charset=utf-8", extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _answer(self, send_body: bool) -> None:
        self._send_body = send_body
        try:
            self._route()
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:
            log.exception("error answering %s %s", self.command, self.path)
            self._send_bytes(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n",
                             "text/plain; charset=utf-8")

    def _route(self) -> None:
        config = self.server.config
        segments = request_segments(self.path)
        if segments is None:
            return self._not_found()
        head, rest = (segments[0], segments[1:]) if segments else ("", [])
        if head in ("", "index.html") and not rest:
            return self._send_file(config.static_dir / "index.html", REVALIDATE, csp=True)
        if head == "static":
            file = resolve_file(config.static_dir, rest)
            return self._send_file(file, REVALIDATE) if file else self._not_found()
        if head == "vendor" and rest[:1] == ["tfjs"] and len(rest) == 2 and rest[1] in TFJS_FILES:
            file = resolve_file(config.tfjs_dist, rest[1:]) if config.tfjs_dist else None
            return self._send_file(file, REVALIDATE) if file else self._not_found()
        if head == "api" and rest == ["latest"]:
            return self._send_latest()
        if head == "models":
            file = resolve_file(config.repo, rest)
            if file is None:
                return self._not_found()
            return self._send_file(file, self._model_file_caching(rest))
        return self._not_found()

    def _model_file_caching(self, segments: list[str]) -> str:
        """Only an exported version's files asked for by sha256 (the page's URLs) are fixed."""
        content_addressed = "sha256" in parse_qs(urlsplit(self.path).query)
        if not content_addressed or segments[-1] == MANIFEST or len(segments) < 4 or not segments[1].isdigit():
            return REVALIDATE
        version_dir = self.server.config.repo / segments[0] / segments[1]
        return IMMUTABLE if (version_dir / MANIFEST).is_file() else REVALIDATE

    def _send_latest(self) -> None:
        try:
            body: dict[str, Any] = latest_model(self.server.config)
            status = HTTPStatus.OK
        except ModelRepositoryError as exc:
            body, status = {"error": str(exc)}, HTTPStatus.SERVICE_UNAVAILABLE
        data = json.dumps(body, indent=1).encode() + b"\n"
        self._send_bytes(status, data, "application/json", extra={"Cache-Control": REVALIDATE})

    def _send_file(self, file: Path, caching: str, csp: bool = False) -> None:
        try:
            handle = open(file, "rb")  # noqa: SIM115 - closed below, after streaming
        except OSError:
            return self._not_found()
        with handle:
            stat = os.fstat(handle.fileno())
            etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
            headers = {"Cache-Control": caching, "ETag": etag}
            if csp:
                headers["Content-Security-Policy"] = CSP
            if etag in (self.headers.get("If-None-Match") or ""):
                self.send_response(HTTPStatus.NOT_MODIFIED)
                self._common_headers(headers)
                self.end_headers()
                return
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", CONTENT_TYPES.get(file.suffix.lower(), BINARY))
            self.send_header("Content-Length", str(stat.st_size))
            self._common_headers(headers)
            self.end_headers()
            if self._send_body:
                shutil.copyfileobj(handle, self.wfile)

    def _not_found(self) -> None:
        self._send_bytes(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _send_bytes(self, status: HTTPStatus, data: bytes, content_type: str,
                    extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self._common_headers({"Cache-Control": "no-store", **(extra or {})})
        self.end_headers()
        if getattr(self, "_send_body", self.command != "HEAD"):
            self.wfile.write(data)

    def _common_headers(self, headers: dict[str, str]) -> None:
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.debug("%s " + format, self.address_string(), *args)


class WebServer(ThreadingHTTPServer):
    """A threaded HTTP server that knows its WebConfig; threads die with the process."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], config: WebConfig):
        self.config = config
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"
