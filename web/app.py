"""The drawing page's routes: the page, TensorFlow.js and the model repository, read-only.

    /                       the page (web/static/index.html), with a same-origin CSP
    /static/<file>          the page's scripts, styles and icon
    /vendor/tfjs/<file>     tf.min.js (+ .map) from the project's npm install
    /api/latest             JSON: the newest exported version with a TF.js model, its manifest
    /models/<name>/<v>/...  the model repository's files (manifest, tfjs/, onnx/, ...)

`page_routes(config)` is what both servers of the page mount: `digitserve web` (create_app, on
uvicorn in server.py) and `digitserve serve --web`, beside /v2 (serve/http/app.py). Files are
Starlette's StaticFiles: ETag, Last-Modified, 304, ranges, HEAD, and its containment of paths and
symlinks. Decided here: content types, caching, the headers of every answer, which repository
paths may be asked for (paths.py), GET and HEAD only (405), and every failure a plain 404 that
tells nobody what exists.
Caching: the page, its scripts and every manifest are revalidated on each load (ETag). The page
asks for an exported version's files with the model's sha256 in the query, a URL whose content
never changes, so those answers are cached for a year; the same files under a plain URL
revalidate, since a re-export rewrites them in place.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from digitserve.errors import ModelRepositoryError
from digitserve.repository import MANIFEST, ModelRepository
from digitserve.web.paths import TFJS_FILES, find_tfjs_dist, plain_segments

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
# connect-src 'self' also covers the server's answer under `serve --web` (POST /v2/.../infer).
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
EVERY_ANSWER = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


@dataclass(frozen=True)
class WebConfig:
    """What the page's routes publish: the model repository, one model name in it, TF.js."""

    repo: Path
    name: str
    tfjs_dist: Path | None = None
    static_dir: Path = STATIC_DIR
    server_api: bool = False
    """The V2 API answers on the same port (`digitserve serve --web`): /api/latest then names the
    infer URL of the page's model, and the page shows the server's answer beside its own."""

    @classmethod
    def find(cls, repo: Path, name: str, node_modules: str | os.PathLike[str] | None = None, *,
             server_api: bool = False, hint: str = "") -> WebConfig:
        """The config for `repo`, with TF.js found as find_tfjs_dist finds it; logs a warning for
        what the page will be missing (`hint`: where else the command can look for TF.js)."""
        tfjs_dist = find_tfjs_dist(node_modules)
        if tfjs_dist is None:
            where = node_modules or "above the working directory"
            log.warning("@tensorflow/tfjs not found (%s): the page will say so; run `npm ci` "
                        "in the project root%s", where, hint)
        if not Path(repo).is_dir():
            log.warning("model repository %s does not exist yet: the page will say so until "
                        "`digitserve train` and `digitserve export` fill it", repo)
        return cls(repo=Path(repo), name=name, tfjs_dist=tfjs_dist, server_api=server_api)


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
        if not repository.path(version).joinpath(*relative.split("/")).is_file():
            raise ModelRepositoryError(
                f"{config.name} version {version}: its manifest names the TF.js model "
                f"{relative!r}, which is missing: run `digitserve export --version {version}` again"
            )
        base = f"/models/{quote(config.name)}/{version}"
        # a re-export of this version gets a new URL, so the year-long cache cannot go stale
        model_url = f"{base}/{quote(relative)}?sha256={quote(tfjs.sha256)}"
        latest = {
            "name": config.name,
            "version": version,
            "test_accuracy": manifest.model.test_accuracy,
            "model_url": model_url,
            "manifest_url": f"{base}/{MANIFEST}",
            "manifest": manifest.to_json(),
        }
        if config.server_api:  # the same model and version, asked of the server (KServe V2 REST)
            latest["infer_url"] = f"/v2/models/{quote(config.name)}/versions/{version}/infer"
        return latest
    raise ModelRepositoryError(
        f"no exported version of {config.name} in {config.repo} has a TF.js model: "
        "run `digitserve export --formats tfjs` (or all formats)"
    )


def plain(status: int, text: str, headers: Mapping[str, str] | None = None) -> Response:
    return PlainTextResponse(text, status, {"cache-control": "no-store", **(headers or {})})


def not_found() -> Response:
    return plain(404, "not found\n")


class PageEndpoint:
    """An ASGI app: GET and HEAD go to `respond`, other methods get 405; what is not there (a
    StaticFiles 404, an unreadable file) is 404; every answer carries EVERY_ANSWER."""

    def __init__(self, respond: Callable[[Request], Awaitable[Response]]):
        self.respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._answer(Request(scope))
        response.headers.update(EVERY_ANSWER)
        await response(scope, receive, send)

    async def _answer(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return plain(405, "only GET and HEAD\n", {"allow": "GET, HEAD"})
        try:
            return await self.respond(request)
        except (HTTPException, OSError):  # StaticFiles: 404, or 401 for a file it may not read
            return not_found()
        except Exception:
            log.exception("error answering %s %s", request.method, request.url.path)
            return plain(500, "internal error\n")


async def send_file(files: StaticFiles, path: str, request: Request, caching: str) -> Response:
    """The file at `path` under `files`' folder (StaticFiles decides if it may), our way."""
    response = await files.get_response(path, request.scope)
    if response.status_code != 304:
        response.headers["content-type"] = CONTENT_TYPES.get(os.path.splitext(path)[1].lower(), BINARY)
    response.headers["cache-control"] = caching
    return response


def page_routes(config: WebConfig) -> list[BaseRoute]:
    """The page's routes (see module doc), for any Starlette router."""
    static = StaticFiles(directory=config.static_dir, check_dir=False)
    vendor = StaticFiles(directory=config.tfjs_dist, check_dir=False) if config.tfjs_dist else None
    repository = StaticFiles(directory=config.repo, check_dir=False)

    async def page(request: Request) -> Response:
        response = await send_file(static, "index.html", request, REVALIDATE)
        response.headers["content-security-policy"] = CSP
        return response

    async def static_file(request: Request) -> Response:
        return await send_file(static, static.get_path(request.scope), request, REVALIDATE)

    async def tfjs_file(request: Request) -> Response:
        name = request.path_params["file"]
        if vendor is None or name not in TFJS_FILES:
            return not_found()
        return await send_file(vendor, name, request, REVALIDATE)

    async def latest(request: Request) -> Response:
        try:
            body: dict[str, Any] = await asyncio.to_thread(latest_model, config)
            status = 200
        except ModelRepositoryError as exc:
            body, status = {"error": str(exc)}, 503
        data = json.dumps(body, indent=1).encode() + b"\n"
        return Response(data, status, {"cache-control": REVALIDATE}, media_type="application/json")

    async def repository_file(request: Request) -> Response:
        segments = plain_segments(request.scope.get("raw_path") or request.url.path.encode())
        if segments is None or len(segments) < 2 or segments[0] != "models":
            return not_found()
        rest = segments[1:]
        caching = _repository_caching(config, rest, "sha256" in request.query_params)
        return await send_file(repository, os.path.join(*rest), request, caching)

    return [
        Route("/", PageEndpoint(page)),
        Route("/index.html", PageEndpoint(page)),
        Mount("/static", PageEndpoint(static_file)),
        Route("/vendor/tfjs/{file}", PageEndpoint(tfjs_file)),
        Route("/api/latest", PageEndpoint(latest)),
        Mount("/models", PageEndpoint(repository_file)),
    ]


def _repository_caching(config: WebConfig, segments: list[str], content_addressed: bool) -> str:
    """Only an exported version's files asked for by sha256 (the page's URLs) are fixed."""
    if not content_addressed or segments[-1] == MANIFEST or len(segments) < 4 or not segments[1].isdigit():
        return REVALIDATE
    version_dir = config.repo / segments[0] / segments[1]
    return IMMUTABLE if (version_dir / MANIFEST).is_file() else REVALIDATE


async def _not_found(request: Request) -> Response:
    return not_found()


def create_app(config: WebConfig) -> Router:
    """`digitserve web`'s ASGI app: the page's routes, every other path 404 (no slash redirects)."""
    return Router(page_routes(config), redirect_slashes=False, default=PageEndpoint(_not_found))
