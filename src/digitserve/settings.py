"""Settings declared once, as frozen pydantic models, and the argparse flags derived from them.

A field `max_batch_size` becomes the flag `--max-batch-size` with the field's type, default,
bounds (Field(ge=, le=), Literal choices) and help, hence also the variable
DIGITSERVE_MAX_BATCH_SIZE (digitserve.cli.apply_environment) and its row in docs/flags.md
(digitserve.flagdocs). A bad value gets one wording wherever it comes from: the flag, its
variable or code building the settings (`--port: must be a TCP port, 0 to 65535, got 70000`).
Only `digitserve serve` and `digitserve web` import this module: it needs pydantic.
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from digitserve.errors import UsageError

LIMITS = ((Ge, "ge", "at least"), (Gt, "gt", "more than"), (Le, "le", "at most"), (Lt, "lt", "less than"))
OUT_OF_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "literal_error")


@dataclass(frozen=True)
class Noun:
    """What a bounded number stands for, said in its messages: `must be a TCP port, 0 to 65535`."""

    text: str


Port = Annotated[int, Field(ge=0, le=65535), Noun("a TCP port")]


def setting(
    default: Any, help: str, *, group: str | None = None, off_flag: str | None = None, off_help: str = ""
) -> Any:
    """A field with its help and --help group; `off_flag` adds a switch that sets it to None."""
    extra: dict[str, Any] = {"group": group}
    if off_flag:
        extra.update(off_flag=off_flag, off_help=off_help)
    return Field(default, description=help, json_schema_extra=extra)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _extra(field: FieldInfo) -> dict[str, Any]:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def value_field(field: FieldInfo) -> FieldInfo:
    """The field without its `| None`: the type, bounds and noun that a flag's text must meet."""
    if typing.get_origin(field.annotation) in (typing.Union, types.UnionType):
        (value_type,) = [arm for arm in typing.get_args(field.annotation) if arm is not type(None)]
        return FieldInfo.from_annotation(value_type)
    return field


def repeated_item(field: FieldInfo) -> Any:
    """The item type of a `tuple[X, ...]` field (a repeatable flag); None for any other field."""
    args = typing.get_args(field.annotation)
    if typing.get_origin(field.annotation) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None


def choices(field: FieldInfo) -> tuple[Any, ...]:
    """A Literal field's values; () for any other field."""
    annotation = value_field(field).annotation
    return typing.get_args(annotation) if typing.get_origin(annotation) is Literal else ()


def bounds(field: FieldInfo) -> str:
    """`0 to 65535`, `at least 1`, ... as the field's Field(ge=, gt=, le=, lt=) say; '' if none."""
    found = {
        key: (words, getattr(item, key))
        for item in value_field(field).metadata
        for kind, key, words in LIMITS
        if isinstance(item, kind)
    }
    if found.keys() == {"ge", "le"}:
        return f"{found['ge'][1]} to {found['le'][1]}"
    return " and ".join(f"{words} {limit}" for words, limit in found.values())


def expected(field: FieldInfo) -> str:
    """What a value must be: `one of auto, cuda, cpu`, `a TCP port, 0 to 65535`, `at least 1`."""
    if choices(field):
        return "one of " + ", ".join(map(str, choices(field)))
    noun = next((item.text for item in value_field(field).metadata if isinstance(item, Noun)), "")
    return ", ".join(part for part in (noun, bounds(field)) if part)


def problem(field: FieldInfo, error: ErrorDetails) -> str:
    """`must be ..., got ...` for one pydantic error of one field."""
    given = error["input"] if isinstance(error["input"], str) else repr(error["input"])
    if error["type"] in OUT_OF_BOUNDS:
        return f"must be {expected(field)}, got {given}"
    if error["type"] == "value_error":  # a validator's own words say what is expected
        return str(error["ctx"]["error"])
    return f"must be {error['msg'].removeprefix('Input should be ').split(',')[0]}, got {given}"


class FlagValue:
    """The argparse `type` of a field's flag: pydantic parses and checks the text."""

    def __init__(self, field: FieldInfo):
        self.field = value_field(field)
        metadata = self.field.metadata
        self.adapter: TypeAdapter[Any] = TypeAdapter(
            Annotated[(self.field.annotation, *metadata)] if metadata else self.field.annotation
        )

    def __call__(self, text: str) -> Any:
        try:
            return self.adapter.validate_python(text)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(problem(self.field, exc.errors()[0])) from None


class Repeated(argparse._AppendAction):
    """A repeatable flag whose values replace its default (a variable's list) instead of adding to it."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        if getattr(namespace, self.dest) is self.default:
            setattr(namespace, self.dest, None)
        super().__call__(parser, namespace, values, option_string)


class Settings(BaseModel):
    """Frozen, validated settings whose bad values raise UsageError naming the --flag."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise UsageError("; ".join(self._problem_of(error) for error in exc.errors())) from None

    @classmethod
    def _problem_of(cls, error: ErrorDetails) -> str:
        if not error["loc"]:  # a cross-field check of a model_validator
            return str(error["ctx"]["error"])
        name = str(error["loc"][0])
        if name not in cls.model_fields:
            return f"{cls.__name__} has no setting {name!r}"
        return f"{flag(name)} {problem(cls.model_fields[name], error)}"

    @classmethod
    def add_flags(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per field, in its --help group; a field whose flag the parser has already
        (--repo and --name of add_repo_options) keeps that one."""
        groups: dict[str | None, Any] = {None: parser}
        for name, field in cls.model_fields.items():
            if flag(name) in parser._option_string_actions:
                continue
            extra = _extra(field)
            if extra.get("group") not in groups:
                groups[extra["group"]] = parser.add_argument_group(extra["group"])
            group = groups[extra.get("group")]
            group.add_argument(flag(name), **_flag_options(name, field))
            if "off_flag" in extra:
                group.add_argument(extra["off_flag"], action="store_true", help=extra["off_help"])

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        """The settings that a parsed command line (flags and DIGITSERVE_ variables) asks for."""
        values = {name: getattr(args, name) for name in cls.model_fields}
        for name, field in cls.model_fields.items():
            if repeated_item(field) is not None:
                values[name] = tuple(values[name] or field.default)
            off_flag = _extra(field).get("off_flag")
            if off_flag and getattr(args, off_flag.removeprefix("--").replace("-", "_")):
                values[name] = None
        return cls(**values)

    def replace(self, **changes: Any) -> Self:
        """A validated copy with `changes`."""
        return type(self)(**{**dict(self), **changes})

    def describe(self) -> str:
        """One line of `key=value` for the start-up log."""
        return " ".join(f"{key}={value}" for key, value in self)


def _flag_options(name: str, field: FieldInfo) -> dict[str, Any]:
    if field.annotation is bool:
        if field.default is not False:
            raise TypeError(f"{name}: a store_true flag can only switch a setting on; default it to False")
        return {"action": "store_true", "help": field.description}
    if (item := repeated_item(field)) is not None:
        return {"action": Repeated, "type": FlagValue(FieldInfo.from_annotation(item)), "default": None,
                "help": field.description}
    shown = field.description if field.default is None else f"{field.description} (default: %(default)s)"
    if choices(field):
        return {"choices": choices(field), "default": field.default, "help": shown}
    return {"type": FlagValue(field), "default": field.default, "help": shown}
