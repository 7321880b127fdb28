"""Repository serving at start: every model of `--repo`, version policies, routing by model and
version on both APIs, per-model health, readiness, metadata, the repository index, and the
starts that must fail. Real `digitserve serve` processes over a repository of a softmax
(versions 1, 2, 3) and a small CNN (1, 2); answers are compared with in-process ONNX Runtime on
each version's own file. Nothing here changes the shared models_repo, so servers are shared.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.serve.repository_fixtures import (
    CNN,
    IMAGES,
    PIXELS,
    SERVING,
    SOFTMAX,
    Client,
    Reference,
    error_line,
    failure,
    make_repository,
    start,
    start_fails,
    write_policy,
)
from tests.support.server import ServeProcess, Servers

ATOL = 1e-5
ALL_VERSIONS = {SOFTMAX: [1, 2, 3], CNN: [1, 2]}


@pytest.fixture(scope="module")
def server_all(repo_servers: Servers, shared_models_repo: Path) -> ServeProcess:
    """`--repo R`: every model, the default policy latest:1 (softmax 3, cnn 2)."""
    return start(repo_servers, shared_models_repo)


@pytest.fixture(scope="module")
def server_every_version(repo_servers: Servers, shared_models_repo: Path) -> ServeProcess:
    """`--version-policy all`: all five versions."""
    return start(repo_servers, shared_models_repo, "--version-policy", "all")


@pytest.fixture
def client_all(server_all: ServeProcess) -> Iterator[Client]:
    with Client(server_all.target) as client:
        yield client


def assert_answers(probabilities: np.ndarray, response: object, reference: Reference, name: str,
                   version: int) -> None:
    """The answer is `name` version `version`'s, by its metadata and by its numbers."""
    assert response.model_name == name, response.model_name
    assert int(response.model_version) == version, response.model_version
    np.testing.assert_allclose(probabilities, reference(name, version), atol=ATOL)


def test_the_fixture_versions_give_different_answers(shared_models_reference: Reference) -> None:
    # otherwise comparing answers with a version's reference would not tell versions apart
    answers = [shared_models_reference(name, v) for name, versions in ALL_VERSIONS.items() for v in versions]
    for i, first in enumerate(answers):
        for second in answers[i + 1:]:
            assert np.abs(first - second).max() > 100 * ATOL


# -- every model, newest version ---------------------------------------------------------------

def test_serves_every_model_at_its_newest_version_by_default(
    client_all: Client, shared_models_reference: Reference
) -> None:
    assert client_all.metadata_versions(SOFTMAX) == [3]
    assert client_all.metadata_versions(CNN) == [2]
    for name, newest in ((SOFTMAX, 3), (CNN, 2)):
        assert_answers(*client_all.infer(name), shared_models_reference, name, newest)  # "" = newest
        assert_answers(*client_all.infer(name, str(newest)), shared_models_reference, name, newest)


def test_digits_v1_routes_by_model_and_version(client_all: Client, shared_models_reference: Reference) -> None:
    for name, newest in ((SOFTMAX, 3), (CNN, 2)):
        assert_answers(*client_all.classify(name), shared_models_reference, name, newest)
        assert_answers(*client_all.classify(name, 0), shared_models_reference, name, newest)  # 0 = newest
        assert_answers(*client_all.classify(name, newest), shared_models_reference, name, newest)
    probabilities, response = client_all.classify(CNN)
    assert [p.label for p in response.predictions] == list(probabilities.argmax(axis=1))
    assert len(response.predictions) == len(IMAGES)


def test_digits_v1_without_a_model_is_invalid_when_several_are_served(client_all: Client) -> None:
    code, message = failure(lambda: client_all.classify())
    assert code == grpc.StatusCode.INVALID_ARGUMENT, message
    assert SOFTMAX in message and CNN in message, message


@pytest.mark.parametrize("api", ["v2", "digits"])
def test_an_unknown_model_is_not_found_and_the_message_lists_the_models(client_all: Client, api: str) -> None:
    call = (lambda: client_all.infer("letters")) if api == "v2" else (lambda: client_all.classify("letters"))
    code, message = failure(call)
    assert code == grpc.StatusCode.NOT_FOUND, message
    assert "letters" in message and SOFTMAX in message and CNN in message, message


@pytest.mark.parametrize("api", ["v2", "digits"])
def test_an_unserved_version_is_not_found_and_the_message_lists_the_served_ones(client_all: Client, api: str) -> None:
    for version in (1, 7):  # on disk but not admitted by latest:1; not on disk at all
        if api == "v2":
            code, message = failure(lambda: client_all.infer(SOFTMAX, str(version)))  # noqa: B023 (called at once)
        else:
            code, message = failure(lambda: client_all.classify(SOFTMAX, version))  # noqa: B023
        assert code == grpc.StatusCode.NOT_FOUND, message
        assert SOFTMAX in message and re.search(r"\b3\b", message), message  # what is served


@pytest.mark.parametrize("version", ["abc", "1.5", "two", " "])
def test_a_non_integer_v2_model_version_is_invalid_argument(client_all: Client, version: str) -> None:
    code, message = failure(lambda: client_all.infer(SOFTMAX, version))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, message


def test_health_reports_the_server_every_model_and_every_served_version(client_all: Client) -> None:
    for service in ("", "digits.v1.Classifier", "inference.GRPCInferenceService",
                    SOFTMAX, CNN, f"{SOFTMAX}/3", f"{CNN}/2"):
        assert client_all.health(service) == SERVING, service
    for service in (f"{SOFTMAX}/1", f"{CNN}/1", "letters"):  # never served: not SERVING
        assert client_all.health(service) != SERVING, service


def test_model_ready_and_metadata_follow_the_served_versions(client_all: Client) -> None:
    assert client_all.model_ready(SOFTMAX) is True
    assert client_all.model_ready(SOFTMAX, 3) is True
    assert client_all.model_ready(CNN, 2) is True
    assert client_all.model_ready(SOFTMAX, 1) is False
    assert client_all.model_ready(SOFTMAX, 2) is False
    assert client_all.model_ready(CNN, 1) is False
    assert client_all.model_ready("letters") == grpc.StatusCode.NOT_FOUND


def test_the_repository_index_lists_every_version_on_disk_with_its_state(client_all: Client) -> None:
    index = client_all.index()
    assert set(index) == {(name, v) for name, versions in ALL_VERSIONS.items() for v in versions}, index
    ready = {(SOFTMAX, 3), (CNN, 2)}
    for key, (state, reason) in index.items():
        if key in ready:
            assert state == "READY", (key, state, reason)
        else:
            assert state == "UNAVAILABLE" and reason.strip(), (key, state, reason)
    assert set(client_all.index(ready=True)) == ready


def test_load_and_unload_need_explicit_model_control(client_all: Client) -> None:
    for call in (lambda: client_all.load(SOFTMAX), lambda: client_all.load(SOFTMAX, 1),
                 lambda: client_all.unload(SOFTMAX)):
        code, message = failure(call)
        assert code == grpc.StatusCode.FAILED_PRECONDITION, message
        assert "--model-control explicit" in message, message
    assert client_all.metadata_versions(SOFTMAX) == [3]  # nothing changed


# -- version policies --------------------------------------------------------------------------

def test_version_policy_all_serves_every_version_with_its_own_answers(
    server_every_version: ServeProcess, shared_models_reference: Reference
) -> None:
    with Client(server_every_version.target) as client:
        for name, versions in ALL_VERSIONS.items():
            assert client.metadata_versions(name) == versions
            assert_answers(*client.infer(name), shared_models_reference, name, versions[-1])
            assert_answers(*client.classify(name), shared_models_reference, name, versions[-1])
            for version in versions:
                assert client.model_ready(name, version) is True
                assert client.health(f"{name}/{version}") == SERVING
                assert_answers(*client.infer(name, str(version)), shared_models_reference, name, version)
                assert_answers(*client.classify(name, version), shared_models_reference, name, version)
        assert set(client.index(ready=True)) == {(n, v) for n, vs in ALL_VERSIONS.items() for v in vs}


def test_concurrent_calls_to_different_versions_never_mix(
    server_every_version: ServeProcess, shared_models_reference: Reference
) -> None:
    # Each version has its own batcher: if calls to two versions shared a batch, one of them
    # would get the other's numbers.
    with Client(server_every_version.target) as client:
        pending = [((name, version), client.infer_future(name, str(version), PIXELS[k:k + 1 + k % 4]), k)
                   for k in range(4) for name, versions in ALL_VERSIONS.items() for version in versions
                   for _ in range(4)]
        for (name, version), future, k in pending:
            response = future.result()
            assert response.model_name == name and int(response.model_version) == version
            got = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(-1, 10)
            np.testing.assert_allclose(got, shared_models_reference(name, version, PIXELS[k:k + 1 + k % 4]), atol=ATOL)


def test_a_models_serving_json_overrides_the_flag(servers: Servers, tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo")
    reference = Reference(repo)
    write_policy(repo, CNN, '{"version_policy": "specific:1"}')
    process = start(servers, repo, "--version-policy", "latest:2", "--model", SOFTMAX, "--model", CNN)
    with Client(process.target) as client:
        assert client.metadata_versions(SOFTMAX) == [2, 3]  # the flag
        assert client.metadata_versions(CNN) == [1]  # its file
        assert_answers(*client.infer(SOFTMAX), reference, SOFTMAX, 3)
        assert_answers(*client.infer(SOFTMAX, "2"), reference, SOFTMAX, 2)
        assert_answers(*client.infer(CNN), reference, CNN, 1)
        assert client.model_ready(CNN, 2) is False


# -- --model and --name ------------------------------------------------------------------------

def test_model_restricts_what_is_served_and_the_only_model_is_the_default(
    repo_servers: Servers, shared_models_repo: Path, shared_models_reference: Reference
) -> None:
    process = start(repo_servers, shared_models_repo, "--model", CNN)
    with Client(process.target) as client:
        assert_answers(*client.classify(), shared_models_reference, CNN, 2)  # no model: the only one
        assert_answers(*client.infer(CNN), shared_models_reference, CNN, 2)
        code, message = failure(lambda: client.infer(SOFTMAX))
        assert code == grpc.StatusCode.NOT_FOUND and CNN in message, message
        assert client.health(CNN) == SERVING and client.health(SOFTMAX) != SERVING


def test_name_serves_only_that_model_and_makes_it_the_default(
    repo_servers: Servers, shared_models_repo: Path, shared_models_reference: Reference
) -> None:
    process = start(repo_servers, shared_models_repo, "--name", SOFTMAX)
    with Client(process.target) as client:
        assert_answers(*client.classify(), shared_models_reference, SOFTMAX, 3)
        assert_answers(*client.classify(version=3), shared_models_reference, SOFTMAX, 3)
        code, message = failure(lambda: client.classify(CNN))
        assert code == grpc.StatusCode.NOT_FOUND and SOFTMAX in message, message


# -- starts that fail --------------------------------------------------------------------------

@pytest.mark.parametrize("flags", [("--model", "letters"), ("--model", CNN, "--model", "letters"),
                                   ("--name", "letters")], ids=["model", "one-of-two", "name"])
def test_an_unknown_model_name_stops_the_start_listing_the_models_found(
    shared_models_repo: Path, flags: tuple[str, ...]
) -> None:
    code, log = start_fails(shared_models_repo, *flags)
    assert code == 1, log
    line = error_line(log)
    assert "letters" in line and SOFTMAX in line and CNN in line, line
    assert "Traceback" not in log


@pytest.mark.parametrize("policy", ["newest", "latest:0", "specific:a", "all:2"])
def test_a_bad_version_policy_flag_is_a_usage_error(shared_models_repo: Path, policy: str) -> None:
    code, log = start_fails(shared_models_repo, "--version-policy", policy)
    assert code == 2, log
    assert "--version-policy" in log, log
    assert "Traceback" not in log


@pytest.mark.parametrize("text", ['{"version_policy": "latest:0"}', "not json", '{"policy": "all"}'])
def test_a_bad_serving_json_stops_the_start_naming_the_file(tmp_path: Path, text: str) -> None:
    repo = tmp_path / "repo"
    make_repository(repo, softmax=(1,), cnn=(1,))
    write_policy(repo, CNN, text)
    code, log = start_fails(repo)
    assert code == 1, log
    assert str(repo / CNN / "serving.json") in error_line(log), log
    assert "Traceback" not in log


def test_a_model_folder_without_a_complete_version_is_not_a_model(servers: Servers, tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo", softmax=(1,), cnn=())
    (repo / "draft" / "1").mkdir(parents=True)  # trained, never exported: no manifest.json
    shutil.copytree(repo / SOFTMAX / "1" / "onnx", repo / "draft" / "1" / "onnx")
    process = start(servers, repo)
    with Client(process.target) as client:
        assert client.classify()[1].model_name == SOFTMAX  # the only model, so the default
        assert failure(lambda: client.infer("draft"))[0] == grpc.StatusCode.NOT_FOUND
        assert client.health("draft") != SERVING
    code, log = start_fails(repo, "--name", "draft")
    assert code == 1 and "draft" in error_line(log), log

