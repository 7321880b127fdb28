"""Version policies (latest:N, all, specific:V,...) and the per-model serving.json override."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from digitserve.errors import ModelRepositoryError
from digitserve.serve.policy import SERVING_FILE, VersionPolicy, check_policy_text, read_model_policy

FORMS = "latest:N (N >= 1), all, specific:V[,V...]"
DEFAULT = VersionPolicy("latest")


@pytest.mark.parametrize(
    ("text", "policy", "normal"),
    [
        ("latest", VersionPolicy("latest", count=1), "latest:1"),
        ("latest:1", VersionPolicy("latest"), "latest:1"),
        ("latest:3", VersionPolicy("latest", count=3), "latest:3"),
        ("  LATEST:2\n", VersionPolicy("latest", count=2), "latest:2"),
        ("latest: 2", VersionPolicy("latest", count=2), "latest:2"),
        ("all", VersionPolicy("all"), "all"),
        (" All ", VersionPolicy("all"), "all"),
        ("specific:4", VersionPolicy("specific", versions=(4,)), "specific:4"),
        ("specific:5,3", VersionPolicy("specific", versions=(3, 5)), "specific:3,5"),
        ("Specific:3, 5,3", VersionPolicy("specific", versions=(3, 5)), "specific:3,5"),
        ("specific:007", VersionPolicy("specific", versions=(7,)), "specific:7"),
    ],
)
def test_parse_and_str_round_trip(text: str, policy: VersionPolicy, normal: str) -> None:
    parsed = VersionPolicy.parse(text)
    assert parsed == policy
    assert str(parsed) == normal
    assert VersionPolicy.parse(str(parsed)) == parsed
    assert check_policy_text(text) == normal


def test_specific_versions_are_sorted_and_unique_when_built_directly() -> None:
    assert VersionPolicy("specific", versions=(5, 3, 5)).versions == (3, 5)


@pytest.mark.parametrize(
    "text",
    [
        "", "   ", "latest:0", "latest:-1", "latest:x", "latest:", "latest:1.5", "latest:+2", "latest:2:3",
        "specific", "specific:", "specific:a", "specific:0", "specific:3,", "specific:3,,5", "specific:-3",
        "specific:٣", "bogus", "lates:2", "all:2", "all:", "latest 2",
    ],
)
def test_bad_strings_name_the_text_and_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError) as info:
        VersionPolicy.parse(text)
    message = str(info.value)
    assert repr(text) in message
    assert FORMS in message
    with pytest.raises(ValueError, match="is not one of"):
        check_policy_text(text)


def test_the_example_message() -> None:
    with pytest.raises(ValueError) as info:
        VersionPolicy.parse("lates:2")
    assert str(info.value).startswith(f"version policy 'lates:2' is not one of {FORMS}")


@pytest.mark.parametrize("value", [None, 2, b"all"])
def test_non_text_is_a_value_error(value: object) -> None:
    with pytest.raises(ValueError, match="not text"):
        VersionPolicy.parse(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "count", "versions"),
    [
        ("latest", 0, ()), ("latest", True, ()), ("latest", 1, (3,)), ("all", 2, ()), ("all", 1, (3,)),
        ("specific", 1, ()), ("specific", 1, (0,)), ("specific", 2, (3,)), ("newest", 1, ()),
    ],
)
def test_direct_construction_follows_the_same_rules(kind: str, count: int, versions: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="is not one of"):
        VersionPolicy(kind, count=count, versions=versions)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("policy", "available", "selected", "missing"),
    [
        ("latest", [1, 2, 3], [3], []),
        ("latest:2", [3, 1, 2, 7], [3, 7], []),
        ("latest:3", [4, 2], [2, 4], []),
        ("latest:1", [], [], []),
        ("all", [5, 1, 3], [1, 3, 5], []),
        ("all", [], [], []),
        ("specific:3,5", [1, 2, 3, 4, 5, 6], [3, 5], []),
        ("specific:3,5", [1, 3, 4], [3], [5]),
        ("specific:3,5", [1, 2], [], [3, 5]),
        ("specific:3,5", [], [], [3, 5]),
        ("latest:2", [2, 2, 1], [1, 2], []),
    ],
)
def test_select_and_missing(policy: str, available: list[int], selected: list[int], missing: list[int]) -> None:
    parsed = VersionPolicy.parse(policy)
    assert parsed.select(available) == selected
    assert parsed.select(iter(available)) == selected  # any iterable, read once
    assert parsed.missing(available) == missing


def write_serving(model_dir: Path, text: str) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    file = model_dir / SERVING_FILE
    file.write_text(text, encoding="utf-8")
    return file


def test_no_file_means_the_default(tmp_path: Path) -> None:
    assert read_model_policy(tmp_path, DEFAULT) is DEFAULT
    all_versions = VersionPolicy("all")
    assert read_model_policy(tmp_path / "no-such-model", all_versions) is all_versions


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ('{"version_policy": "latest:2"}', VersionPolicy("latest", count=2)),
        ('{"version_policy": " ALL "}\n', VersionPolicy("all")),
        ('{\n  "version_policy": "specific:5,3"\n}\n', VersionPolicy("specific", versions=(3, 5))),
        ("{}", DEFAULT),
    ],
)
def test_the_file_overrides_the_default(tmp_path: Path, text: str, policy: VersionPolicy) -> None:
    write_serving(tmp_path / "digits", text)
    assert read_model_policy(tmp_path / "digits", DEFAULT) == policy


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"version_policy": "latest:2"', "is not valid JSON"),
        ("", "is not valid JSON"),
        ("version_policy: all", "is not valid JSON"),
        ('{"version_policy": "all", "version_policy": "latest"}', 'key "version_policy" appears twice'),
        ('["latest:2"]', "holds a JSON array, not an object"),
        ('"latest:2"', "holds a JSON string, not an object"),
        ("null", "holds a JSON null, not an object"),
        ('{"versions": [3, 5]}', 'unknown key "versions"'),
        ('{"version_policy": "all", "Version_Policy": "all", "x": 1}', 'unknown keys "Version_Policy", "x"'),
        ('{"version_policy": 2}', '"version_policy" is a JSON number (2), not a string'),
        ('{"version_policy": ["latest", 2]}', '"version_policy" is a JSON array (["latest", 2]), not a string'),
        ('{"version_policy": null}', '"version_policy" is a JSON null (null), not a string'),
        ('{"version_policy": {"latest": {"num_versions": 2}}}', '"version_policy" is a JSON object'),
        ('{"version_policy": "lates:2"}', f"\"version_policy\": version policy 'lates:2' is not one of {FORMS}"),
        ('{"version_policy": "specific:"}', f"version policy 'specific:' is not one of {FORMS}"),
    ],
)
def test_a_bad_file_names_itself_the_problem_and_the_format(tmp_path: Path, text: str, problem: str) -> None:
    file = write_serving(tmp_path / "digits", text)
    with pytest.raises(ModelRepositoryError) as info:
        read_model_policy(tmp_path / "digits", DEFAULT)
    message = str(info.value)
    assert message.startswith(f"{file}: ")
    assert problem in message
    assert message.endswith('the file holds {"version_policy": "latest:N" | "all" | "specific:V[,V...]"}')


def test_the_message_names_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_serving(tmp_path / "models" / "digits", '{"versions": 2}')
    with pytest.raises(ModelRepositoryError, match=r'^models/digits/serving\.json: unknown key "versions"; '):
        read_model_policy(Path("models/digits"), DEFAULT)


def test_a_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    file = tmp_path / SERVING_FILE
    file.write_bytes(b'{"version_policy": "\xff"}')
    with pytest.raises(ModelRepositoryError, match="is not UTF-8") as info:
        read_model_policy(tmp_path, DEFAULT)
    assert str(info.value).startswith(f"{file}: ")


def test_a_folder_in_place_of_the_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / SERVING_FILE).mkdir()
    with pytest.raises(ModelRepositoryError, match="cannot be read") as info:
        read_model_policy(tmp_path, DEFAULT)
    assert str(info.value).startswith(f"{tmp_path / SERVING_FILE}: ")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_an_error(tmp_path: Path) -> None:
    file = write_serving(tmp_path, '{"version_policy": "all"}')
    file.chmod(0)
    try:
        with pytest.raises(ModelRepositoryError, match="cannot be read.*Permission denied") as info:
            read_model_policy(tmp_path, DEFAULT)
    finally:
        file.chmod(0o644)
    assert str(info.value).startswith(f"{file}: ")


def test_the_module_needs_only_the_standard_library_and_digitserve_errors() -> None:
    import ast
    import sys

    import digitserve.serve.policy as policy

    modules = set()
    for node in ast.walk(ast.parse(Path(policy.__file__).read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module or "")
    assert {m for m in modules if m.split(".")[0] not in sys.stdlib_module_names} == {"digitserve.errors"}
