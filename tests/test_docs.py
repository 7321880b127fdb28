"""The documents are true to the repository: what they link and name exists, the command lines
and flag tables they show are ones the real CLI accepts, and nothing names a path of one machine.

- Every relative link (and its #anchor) in README.md and docs/*.md leads somewhere, and every
  `docs/...` or `*.md` file named there or in the code (comments, docstrings, strings) exists.
- No tracked file names a machine path (a home or work folder of the machines it was written on).
- Every `digitserve ...` line of a fenced sh/console block parses with `digitserve.cli`'s parser,
  under the `DIGITSERVE_*` variables the line sets; every `make` target and uv `--extra` exists.
- Every flag table (`| flag | environment | default | ...`) agrees with the parser.
- The README stays a front door: at most 220 lines, linking every document in docs/.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from digitserve.cli import COMMANDS, ENV_PREFIX, build_parser
from tests.support.commands import environment, subparser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# The documents the code and the README cite by these names (issue 10's layout).
AGREED_DOCS = ("design", "toolchain", "training", "export", "serving", "flags", "client", "web", "deploy",
               "benchmarks", "testing")
README_MAX_LINES = 220
# Files whose text is not ours to police (generated lock files) or not text.
NOT_CHECKED = ("uv.lock", "package-lock.json")
# Machine paths: folders of the machines this was written on. Spelled in pieces so that this
# file does not name them itself.
MACHINE_PATHS = re.compile("|".join((
    "/" + "work/",                       # the development machines' checkouts
    "/" + "root/",                       # root's home
    r"/home/[a-z_][\w.-]*/",             # somebody's home
    r"/Users/[\w.-]+/",                  # somebody's home, macOS
)))
# `digitserve` lines of the docs that cannot be parsed as written (placeholders, substitutions).
# Keep this short: a line here is a line no test checks.
UNPARSED_LINES: frozenset[str] = frozenset()
# Which command each flag table documents.
FLAG_TABLE_COMMANDS = {"docs/export.md": "export"}
# Top-level folders whose paths, named in backticks in the docs, must exist.
REPO_FOLDERS = ("src", "train", "export", "serve", "client", "bench", "web", "deploy", "tests", "protos", "docs")
# Paths inside a model version that share a name with a folder of the repository.
VERSION_PATHS = ("train/metrics.json", "train/history.json")


# -- the files ---------------------------------------------------------------------------------
@cache
def repository_files() -> tuple[str, ...]:
    """Tracked files plus new ones git does not ignore (the docs being written count too)."""
    result = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    )
    return tuple(sorted(n for n in result.stdout.decode().split("\0") if n and (ROOT / n).is_file()))


@cache
def text_of(name: str) -> str | None:
    data = (ROOT / name).read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def documents() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def exists(name: str, base: Path) -> bool:
    """Whether `name` (relative to `base`, or to the repository root) is a file or folder here."""
    name = name.rstrip("/")
    return any((where / name).exists() for where in (base, ROOT))


# -- markdown ----------------------------------------------------------------------------------
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.M | re.S)


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return FENCE.sub("", text)


def code_blocks(text: str, kinds: tuple[str, ...]) -> Iterator[str]:
    for match in FENCE.finditer(text):
        if match.group(1) in kinds:
            yield match.group(2)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in prose(path.read_text()).splitlines():
        match = re.match(r"^#{1,6} (.+?)\s*#*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text()))


def link_problems(path: Path) -> list[str]:
    problems = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            problems.append(f"{rel(path)}: link to {target}: no such file")
            continue
        if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            problems.append(f"{rel(path)}: link to {target}: {rel(destination)} has no heading #{anchor}")
    return problems


# -- document names in any file --------------------------------------------------------------
DOC_NAME = re.compile(r"(?<![\w/.@-])((?:[\w.-]+/)*[\w-][\w.-]*\.md|docs/[\w./-]*[\w-])(?![\w/-])")


def named_documents(text: str) -> set[str]:
    return {name for name in DOC_NAME.findall(text) if "*" not in name}


def doc_name_problems(name: str) -> list[str]:
    text = text_of(name)
    if text is None:
        return []
    if name.endswith(".md"):  # link texts name their links' targets, which the link check follows
        text = LINK.sub("", prose(text))
    text = re.sub(r"\bROOT / \"docs\" / \"", "docs/", text)  # pathlib spelling: ROOT / "docs" / "flags.md"
    base = (ROOT / name).parent
    return [f"{name}: names {doc}, which the repository does not contain"
            for doc in sorted(named_documents(text)) if not exists(doc, base)]


# -- command lines ---------------------------------------------------------------------------
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def shell_lines(text: str) -> Iterator[str]:
    """Command lines of the sh and console blocks: continuations joined, comments and prompts off."""
    for match in FENCE.finditer(text):
        kind, body = match.group(1), match.group(2)
        if kind not in ("sh", "bash", "shell", "console"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            if kind == "console":
                if not line.startswith("$ "):
                    continue  # output
                line = line[2:]
            line = re.split(r"\s+#", line, maxsplit=1)[0].strip()
            if line and not line.startswith("#"):
                yield line.rstrip("&").strip()


def digitserve_invocations(line: str) -> Iterator[tuple[dict[str, str], list[str]]]:
    """(environment, argv after `digitserve`) for every digitserve command in a shell line."""
    words = shlex.split(line)
    env: dict[str, str] = {}
    while words and ASSIGNMENT.match(words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    for i, word in enumerate(words):
        program = word.removeprefix(".venv/bin/")
        if program == "digitserve" and i + 1 < len(words) and words[i + 1] in COMMANDS:
            yield env, words[i + 1:]
        if program.endswith("python") and words[i + 1:i + 3] == ["-m", "digitserve"]:
            yield env, words[i + 3:]


def strict(parser: argparse.ArgumentParser) -> None:
    """No abbreviated options: `--max-batch` in a document is a typo, not `--max-batch-size`."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                strict(sub)


def parse(argv: list[str], env: dict[str, str]) -> str | None:
    """None when `digitserve ARGV` parses, else argparse's complaint."""
    with environment(env), contextlib.redirect_stderr(io.StringIO()) as stderr:
        try:
            parser = build_parser(argv[0])
            strict(parser)
            parser.parse_args(argv)
        except SystemExit as exc:
            if exc.code:
                return stderr.getvalue().strip().splitlines()[-1]
    return None


def command_lines() -> list[tuple[str, str]]:
    return [(rel(path), line) for path in documents() for line in shell_lines(path.read_text())]


def command_parser(command: str) -> argparse.ArgumentParser:
    with environment({}):
        return subparser(build_parser(command), command)


# == the tests ==================================================================================
def test_the_agreed_documents_exist() -> None:
    missing = [f"docs/{name}.md" for name in AGREED_DOCS if not (DOCS / f"{name}.md").is_file()]
    assert not missing, f"missing documents: {missing}"


@pytest.mark.parametrize("path", documents(), ids=rel)
def test_relative_links_lead_somewhere(path: Path) -> None:
    problems = link_problems(path)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", documents(), ids=rel)
def test_paths_the_documents_name_exist(path: Path) -> None:
    """Files named in backticks (`serve/batcher.py`, `deploy/k8s/`) and every document named."""
    text = path.read_text()
    problems = doc_name_problems(rel(path))
    for span in re.findall(r"`([^`\n]+)`", prose(text)):
        for word in span.split():
            word = word.rstrip(".,;:)")
            if (word.split("/")[0] in REPO_FOLDERS and "/" in word and word not in VERSION_PATHS
                    and not re.search(r"[<>*{}…]", word)):
                if not exists(word.split("#")[0], path.parent):
                    problems.append(f"{rel(path)}: names `{word}`, which the repository does not contain")
    assert not problems, "\n".join(problems)


def test_the_code_cites_only_documents_that_exist() -> None:
    this_file = rel(Path(__file__).resolve())  # it names missing documents on purpose, to test the check
    problems = [
        problem for name in repository_files()
        if not name.endswith(".md") and not name.startswith(NOT_CHECKED) and name != this_file
        for problem in doc_name_problems(name)
    ]
    assert not problems, "\n".join(problems)


def test_no_file_names_a_machine_path() -> None:
    problems = []
    for name in repository_files():
        text = text_of(name)
        if name in NOT_CHECKED or text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            match = MACHINE_PATHS.search(line)
            if match:
                problems.append(f"{name}:{number}: {match.group(0)!r} in {line.strip()[:120]!r}")
    assert not problems, "\n".join(problems)


def test_documents_show_digitserve_command_lines() -> None:
    """The command-line check below has something to check in every reference document."""
    checked = {doc for doc, line in command_lines() if any(digitserve_invocations(line))}
    for name in ("README.md", "docs/training.md", "docs/export.md", "docs/serving.md", "docs/client.md",
                 "docs/web.md", "docs/deploy.md", "docs/benchmarks.md"):
        assert name in checked, f"{name} shows no digitserve command line in a sh or console block"


@pytest.mark.parametrize(("doc", "line"), command_lines(), ids=lambda value: value[:60])
def test_command_lines_parse(doc: str, line: str) -> None:
    if line in UNPARSED_LINES:
        pytest.skip("listed in UNPARSED_LINES")
    try:
        invocations = list(digitserve_invocations(line))
    except ValueError as exc:  # unbalanced quotes
        pytest.fail(f"{doc}: {line!r} is not a shell line ({exc}); fix it or list it in UNPARSED_LINES")
    for env, argv in invocations:
        assert "$(" not in line and "`" not in line, f"{doc}: {line!r}: list it in UNPARSED_LINES"
        complaint = parse(argv, env)
        assert complaint is None, f"{doc}: {line!r}: {complaint}"
    words = shlex.split(line)
    if words[:1] == ["make"]:
        targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
        for target in [w for w in words[1:] if "=" not in w and not w.startswith("-")]:
            assert target in targets, f"{doc}: {line!r}: the Makefile has no target {target}"
    if words[:2] == ["uv", "sync"]:
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        for i, word in enumerate(words):
            if word == "--extra":
                assert words[i + 1] in extras, f"{doc}: {line!r}: pyproject.toml has no extra {words[i + 1]}"


def test_install_commands_name_real_extras() -> None:
    """The uv commands in the README's prose and tables (outside code blocks) too."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for path in documents():
        for named in re.findall(r"--extra ([\w-]+)", prose(path.read_text())):
            assert named in extras, f"{rel(path)}: --extra {named}: pyproject.toml has no such extra"


def flag_tables(text: str) -> Iterator[list[list[str]]]:
    for table in re.findall(r"^\| flag \| environment \| default \|.*\n\|[- |]+\|\n((?:\|.*\|\n?)+)", text, re.M):
        yield [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in table.splitlines()]


def shown(default: object) -> str:
    if isinstance(default, list | tuple):
        return ",".join(map(str, default))
    return str(default)


@pytest.mark.parametrize("path", documents(), ids=rel)
def test_flag_tables_agree_with_the_parser(path: Path) -> None:
    tables = list(flag_tables(path.read_text()))
    if not tables:
        return
    doc = rel(path)
    assert doc in FLAG_TABLE_COMMANDS, f"{doc} has a flag table: name its command in FLAG_TABLE_COMMANDS"
    options = {o: a for a in command_parser(FLAG_TABLE_COMMANDS[doc])._actions for o in a.option_strings}
    problems = []
    for rows in tables:
        for flags_cell, env_cell, default_cell, *_ in rows:
            flags = re.findall(r"`(--[\w-]+)`", flags_cell)
            variables = re.findall(r"`(DIGITSERVE_\w+)`", env_cell)
            for flag in flags:
                if flag not in options:
                    problems.append(f"{doc}: {flag} is no option of digitserve {FLAG_TABLE_COMMANDS[doc]}")
                    continue
                action = options[flag]
                variable = ENV_PREFIX + action.dest.upper()
                read = action.dest not in ("help", "version")
                if read and variable not in variables:
                    problems.append(f"{doc}: {flag} reads {variable}, the table says {env_cell}")
                if not read and variables:
                    problems.append(f"{doc}: {flag} reads no variable, the table says {env_cell}")
                value = re.fullmatch(r"`([^`]*)`", default_cell)
                if value and value.group(1) != shown(action.default):
                    problems.append(f"{doc}: {flag} defaults to {shown(action.default)!r}, the table says "
                                    f"{default_cell}")
    assert not problems, "\n".join(problems)


def test_readme_is_a_front_door() -> None:
    text = README.read_text()
    lines = text.count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail to docs/"
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in links(README)}
    unlinked = [rel(doc) for doc in sorted(DOCS.glob("*.md")) if doc.resolve() not in linked]
    assert not unlinked, f"README.md links no {unlinked}"
    for command in ("make run", "make test"):
        assert f"\n{command} " in text, f"README.md should show `{command}`"
    assert "docs/screenshot.png" in text, "README.md should show the page (docs/screenshot.png)"
    assert "What has not been run here" in text


# -- the checkers themselves -------------------------------------------------------------------
def test_the_checkers_find_problems(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.md"
    wrong.write_text(
        "# Title\n\nSee [x](missing.md), [y](#nowhere), [z](#title) and `docs/nothing.md`.\n\n"
        "```sh\ndigitserve serve --max-batch 3   # a typo\nDIGITSERVE_PORT=x digitserve serve\n"
        ".venv/bin/digitserve train --model resnet\n```\n"
    )
    problems = "\n".join(link_problems(wrong))
    assert "missing.md: no such file" in problems and "#nowhere" in problems and "#title" not in problems
    assert named_documents(wrong.read_text()) == {"missing.md", "docs/nothing.md"}
    complaints = [parse(argv, env) for line in shell_lines(wrong.read_text())
                  for env, argv in digitserve_invocations(line)]
    assert len(complaints) == 3 and all(complaints), complaints
    assert parse(["serve", "--max-batch-size", "3"], {}) is None
    machine = "/" + "root/x and /" + "home/alice/y and /" + "work/z"
    assert len(MACHINE_PATHS.findall(machine)) == 3
    assert slug("Export of the CNN (`digitserve export`, parity on all 10,000 test images)") == \
        "export-of-the-cnn-digitserve-export-parity-on-all-10000-test-images"
