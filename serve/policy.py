"""Version policies: which complete versions of a model the server loads and answers for.

The three policies mirror Triton's `version_policy` (ModelVersionPolicy in model_config.proto)
and TF Serving's `model_version_policy` (ServableVersionPolicy), written as one short string
so that a flag, an environment variable and a file can all hold it:

    latest:N            the N highest versions (Triton `latest { num_versions: N }`,
                        TF Serving `latest { num_versions: N }`); "latest" is latest:1, the default
    all                 every version (`all {}` in both)
    specific:V[,V...]   exactly these versions (`specific { versions: ... }`); one that is not
                        on disk is not served, and `missing` names it for the log

A policy only ever chooses among *complete* versions, those whose manifest.json exists
(ModelRepository.complete_versions): a version still being exported is never a candidate,
so latest:1 keeps serving the previous version until the new one is whole.

One model may override the server's policy with `<repo>/<name>/serving.json`:

    {"version_policy": "latest:2"}

The file is checked strictly (unknown keys are an error, not ignored), since a typo that were
silently ignored would serve versions nobody meant to serve. An empty object means the default.
This module imports only the standard library and digitserve.errors, so the settings can use
`check_policy_text` and the server can read the file without pydantic.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from digitserve.errors import ModelRepositoryError

SERVING_FILE = "serving.json"  # models/<name>/serving.json
POLICY_KEY = "version_policy"
FORMS = "latest:N (N >= 1), all, specific:V[,V...]"
FILE_FORMAT = '{"version_policy": "latest:N" | "all" | "specific:V[,V...]"}'

Kind = Literal["latest", "all", "specific"]


@dataclass(frozen=True)
class VersionPolicy:
    """Which of a model's complete versions to serve; `parse` reads one, `str` writes it back."""

    kind: Kind
    count: int = 1  # latest:N
    versions: tuple[int, ...] = ()  # specific:3,5 (sorted, unique)

    def __post_init__(self) -> None:
        # built directly too (the default policy), so the same rules as parse hold here
        versions = tuple(sorted(set(self.versions)))
        object.__setattr__(self, "versions", versions)
        if self.kind == "latest":
            ok = _is_version(self.count) and not versions
        elif self.kind == "all":
            ok = self.count == 1 and not versions
        elif self.kind == "specific":
            ok = self.count == 1 and bool(versions) and all(_is_version(v) for v in versions)
        else:
            ok = False
        if not ok:
            raise ValueError(
                f"VersionPolicy(kind={self.kind!r}, count={self.count!r}, versions={versions!r}) "
                f"is not one of {FORMS}"
            )

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """Read "latest", "latest:N", "all" or "specific:V[,V...]"; anything else is a ValueError."""
        if not isinstance(text, str):
            raise ValueError(f"version policy {text!r} is not text; give one of {FORMS}")
        kind, colon, rest = text.strip().partition(":")
        kind = kind.strip().lower()
        try:
            if kind == "latest":
                return cls("latest", count=_number(rest) if colon else 1)
            if kind == "all" and not colon:
                return cls("all")
            if kind == "specific" and colon:
                return cls("specific", versions=tuple(_number(part) for part in rest.split(",")))
        except ValueError:
            pass  # the message below names the text, not the piece that failed
        raise ValueError(f"version policy {text!r} is not one of {FORMS}")

    def select(self, available: Iterable[int]) -> list[int]:
        """The versions of `available` (complete ones) this policy serves, ascending."""
        have = sorted(set(available))
        if self.kind == "latest":
            return have[-self.count:]
        if self.kind == "all":
            return have
        wanted = set(self.versions)
        return [v for v in have if v in wanted]

    def missing(self, available: Iterable[int]) -> list[int]:
        """Versions a specific policy names that `available` lacks: worth a log line, not a failure."""
        if self.kind != "specific":
            return []
        have = set(available)
        return [v for v in self.versions if v not in have]

    def __str__(self) -> str:
        if self.kind == "latest":
            return f"latest:{self.count}"
        if self.kind == "all":
            return "all"
        return "specific:" + ",".join(map(str, self.versions))


def check_policy_text(text: str) -> str:
    """The normalised form of a policy string (for the settings' validator), or a ValueError."""
    return str(VersionPolicy.parse(text))


def read_model_policy(model_dir: Path, default: VersionPolicy) -> VersionPolicy:
    """The policy of one model: its serving.json's `version_policy`, else `default`."""
    file = Path(model_dir) / SERVING_FILE
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return default
    except OSError as exc:
        raise _bad(file, f"cannot be read ({exc.strerror or exc}); make it a readable file") from exc
    except UnicodeDecodeError as exc:
        raise _bad(file, f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except ValueError as exc:
        raise _bad(file, f"is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise _bad(file, f"holds a JSON {_json_type(data)}, not an object")
    unknown = [key for key in data if key != POLICY_KEY]
    if unknown:
        names = ", ".join(f'"{key}"' for key in unknown)
        raise _bad(file, f"unknown key{'s' if len(unknown) > 1 else ''} {names}")
    if POLICY_KEY not in data:
        return default
    value = data[POLICY_KEY]
    if not isinstance(value, str):
        raise _bad(file, f'"{POLICY_KEY}" is a JSON {_json_type(value)} ({json.dumps(value)}), not a string')
    try:
        return VersionPolicy.parse(value)
    except ValueError as exc:
        raise _bad(file, f'"{POLICY_KEY}": {exc}') from exc


def _is_version(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(text: str) -> int:
    """An ASCII decimal number (int() alone would take "+3", "3_0" and other scripts' digits)."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        raise ValueError(text)
    return int(text)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of duplicate keys silently; two policies in one file is a mistake
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f'key "{key}" appears twice')
        seen[key] = value
    return seen


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _bad(file: Path, problem: str) -> ModelRepositoryError:
    return ModelRepositoryError(f"{file}: {problem}; the file holds {FILE_FORMAT}")
