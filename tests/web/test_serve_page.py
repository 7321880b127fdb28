"""`digitserve serve --web`: the drawing page beside /v2 on the server's one HTTP port, and the
server's answer shown beside the browser's, compared."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.server import ServeProcess, Servers
from tests.web.page import Page
from tests.web.strokes import DIGITS

AGREEMENT = 1e-4  # the page's bound (web/static/app.js AGREEMENT), export's parity bound


@pytest.fixture(scope="module")
def served(drawing_model_repo: Path, session_servers: Servers) -> Iterator[ServeProcess]:
    """`digitserve serve --http-port 0 --web` on the browser tests' model (ONNX and TF.js)."""
    process = session_servers.serve("--repo", str(drawing_model_repo), "--http-port", "0", "--web",
                                    "--no-metrics")
    yield process.wait_serving()
    process.close()


def request(process: ServeProcess, method: str, path: str,
            body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", process.http_port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_the_page_and_v2_share_one_port(served: ServeProcess) -> None:
    status, headers, page = request(served, "GET", "/")
    assert status == 200 and b"/static/app.js" in page
    assert "connect-src 'self'" in headers["content-security-policy"]
    for path in ("/static/app.js", "/vendor/tfjs/tf.min.js", "/v2", "/v2/health/ready"):
        assert request(served, "GET", path)[0] == 200, path
    status, _, body = request(served, "GET", "/api/latest")
    latest = json.loads(body)
    assert status == 200 and (latest["name"], latest["version"]) == ("digits", 1)
    assert latest["infer_url"] == "/v2/models/digits/versions/1/infer"
    assert request(served, "GET", latest["model_url"])[1]["cache-control"] == "public, max-age=31536000, immutable"
    infer = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 784], "data": [0.0] * 784}]}
    status, _, body = request(served, "POST", latest["infer_url"], json.dumps(infer).encode())
    assert status == 200 and json.loads(body)["model_version"] == "1"
    assert request(served, "POST", "/", b"{}")[0] == 405
    assert request(served, "GET", "/models/digits/1/.hidden")[0] == 404
    status, _, body = request(served, "GET", "/v2/nothing")  # the V2 API's own 404 is unchanged
    assert status == 404 and "no V2 endpoint" in json.loads(body)["error"]


def test_web_without_http_port_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "digitserve", "serve", "--web"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--web serves the drawing page on the HTTP/REST port: give --http-port too" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture
def served_page(browser: Any, served: ServeProcess) -> Iterator[Page]:
    opened = Page(browser, served.http_url + "/", viewport={"width": 900, "height": 800})
    yield opened
    opened.close()


@pytest.mark.browser
def test_the_server_answers_beside_the_browser_and_agrees(served_page: Page, artifacts: Path) -> None:
    page = served_page.page
    assert page.is_visible("#server")
    assert "digitserve serve --web" in page.inner_text("footer")
    for digit in (4, 1, 7):
        page.click("#clear")
        served_page.draw(DIGITS[digit])
        assert served_page.settle() == str(digit)
        answers = page.evaluate("window.digitserve.answers()")
        browser, server = np.float32(answers["browser"]), np.float32(answers["server"])
        assert browser.shape == server.shape == (10,)
        assert int(server.argmax()) == int(browser.argmax()) == digit
        worst = float(np.abs(server - browser).max())
        print(f"\nserver vs TF.js on a drawn {digit}: max |dp| {worst:.2e}")
        assert worst <= AGREEMENT
        assert page.inner_text("#server-label") == str(digit)
        assert page.get_attribute("body", "data-server") == "agree"
        assert "Agrees with TF.js" in page.inner_text("#server-check")
    page.screenshot(path=str(artifacts / "page-serve-web.png"))
    page.click("#clear")
    assert served_page.settle() == "–" and page.inner_text("#server-label") == "–"
    assert page.get_attribute("body", "data-server") == ""
    assert served_page.errors == []


@pytest.mark.browser
@pytest.mark.parametrize("change", ["another label", "a probability off by 1e-3"])
def test_a_disagreement_is_flagged(served_page: Page, change: str) -> None:
    """The server's answer, altered on its way to the page, is flagged as a disagreement."""

    def alter(route: Any) -> None:
        response = route.fetch()
        answer = response.json()
        data = answer["outputs"][0]["data"]
        if change == "another label":
            data.reverse()
        else:
            best = data.index(max(data))
            data[best] -= 1e-3
        route.fulfill(response=response, json=answer)

    served_page.page.route("**/v2/models/*/versions/*/infer", alter)
    served_page.draw(DIGITS[4])
    assert served_page.settle() == "4"
    assert served_page.page.get_attribute("body", "data-server") == "disagree"
    check = served_page.page.inner_text("#server-check")
    assert check.startswith("Disagrees with TF.js")
    assert ("the server reads" in check) == (change == "another label")
