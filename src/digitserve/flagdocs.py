"""docs/flags.md: the flag tables of `digitserve serve` and `digitserve web`, read off their parsers.

The parsers are the commands' own (`configure`, no environment applied), so a table cannot drift
from the flags, nor the flags from the settings they derive from (digitserve.settings).
Regenerate with `python -m digitserve.flagdocs > docs/flags.md`; a test fails when it is stale.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator
from pathlib import Path

from digitserve.cli import COMMANDS, environment_variable
from digitserve.settings import FlagValue, bounds

DOCUMENTED = ("serve", "web")
TYPE_WORDS = {int: "integer", float: "number", str: "text", Path: "path"}
HEADER = """# Flags of `digitserve serve` and `digitserve web`

Generated from the settings that the commands declare (serve/settings.py, web/settings.py) by
`python -m digitserve.flagdocs > docs/flags.md`; a test fails when this file is stale.
Every flag can also be set as its environment variable; a flag on the command line wins.
A switch's variable takes 1, true, yes or on (0, false, no, off or empty: off).
"""


def command_parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"digitserve {command}")
    importlib.import_module(COMMANDS[command][0]).configure(parser)
    return parser


def rows(parser: argparse.ArgumentParser) -> Iterator[tuple[str, ...]]:
    """flag, variable, type, default, bounds, help: one row per option."""
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._StoreTrueAction):
            kind, default = "switch", "off"
        elif action.choices is not None:
            kind, default = "one of " + ", ".join(f"`{choice}`" for choice in action.choices), f"`{action.default}`"
        else:
            field = action.type.field if isinstance(action.type, FlagValue) else None
            kind = TYPE_WORDS[field.annotation if field else str]
            if isinstance(action, argparse._AppendAction):
                kind += ", repeatable (variable: comma-separated)"
            default = "none" if action.default is None else f"`{action.default}`"
        help = (action.help or "").replace(" (default: %(default)s)", "").replace("%%", "%")
        limits = bounds(action.type.field) if isinstance(action.type, FlagValue) else ""
        yield (f"`{action.option_strings[-1]}`", f"`{environment_variable(action)}`", kind, default, limits, help)


def table(command: str) -> str:
    lines = [
        f"## `digitserve {command}`",
        "",
        "| flag | environment | type | default | bounds | help |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows(command_parser(command)):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines) + "\n"


def flags_markdown() -> str:
    return "\n".join([HEADER, *map(table, DOCUMENTED)])


if __name__ == "__main__":
    print(flags_markdown(), end="")
