"""The documentation: README size, links, the commands it shows, the params reference, wording.

Fast and offline: reads README.md, CHANGELOG.md and docs/*.md, the typer app and the pydantic
Params model; runs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from pydantic import BaseModel

from mnist_pipeline.core.params import Params
from mnist_pipeline.core.params_overrides import MOVED_KEYS
from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
CHANGELOG = REPO_ROOT / "CHANGELOG.md"
DOCS = REPO_ROOT / "docs"
PARAMS_DOC = DOCS / "params.md"
MAX_README_LINES = 200
MAX_README_WIDTH = 100
# Wording about how the project was made rather than what it does.
HISTORY_PHRASES = (
    "this session",
    "earlier session",
    "the issue",
    "target met",
    "targets met",
    "target: met",
)

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)  # http:, https:, mailto:, ...
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
COMMAND = re.compile(r"(?:(?<![\w./-])mnist-pipeline|\bpython3? -m mnist_pipeline)(?=\s|$)(.*)")
SHELL_END = re.compile(r"\s(?:&&|\|\||\||#)(?=\s)|;|`")  # `: a span inside a block


def doc_files() -> list[Path]:
    """README.md and every page under docs/."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def rel(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def split_markdown(text: str) -> tuple[list[str], list[str]]:
    """(prose lines, code block lines): fenced blocks apart from the rest."""
    prose: list[str] = []
    code: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is not None:
            code.append(line)
        else:
            prose.append(line)
    return prose, code


def code_texts(text: str) -> Iterator[str]:
    """Every code span, and every line of every code block."""
    prose, code = split_markdown(text)
    for line in prose:
        yield from CODE_SPAN.findall(line)
    yield from code


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped (not - or _), spaces to -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a markdown file's headings (repeats get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    for line in prose:
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_readme_is_short_with_short_lines() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"
    wide = [f"line {n}: {len(line)} characters" for n, line in enumerate(lines, 1)]
    wide = [w for w, line in zip(wide, lines, strict=True) if len(line) > MAX_README_WIDTH]
    assert not wide, f"README.md lines over {MAX_README_WIDTH} characters: {wide}"


@pytest.mark.parametrize("path", doc_files(), ids=rel)
def test_relative_links_resolve(path: Path) -> None:
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    broken = []
    for line in prose:
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if EXTERNAL.match(target):
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            if not resolved.exists():
                broken.append(f"{target}: no such file or folder")
            elif not resolved.is_relative_to(REPO_ROOT):
                broken.append(f"{target}: outside the repository")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{rel(path)}: broken links: {broken}"


def is_placeholder(word: str) -> bool:
    """`<stage>`, `COMMAND`: a stand-in for a command name, not one."""
    return word.startswith("<") or (word[:1].isalpha() and word.isupper())


def cli() -> Any:
    """The `mnist-pipeline` command as the click-style group typer builds (a group has
    `.commands`; typer may bring its own copy of click, so this checks no click classes)."""
    from mnist_pipeline.cli.app import app

    group = typer.main.get_command(app)
    assert isinstance(getattr(group, "commands", None), dict)
    return group


def unknown_command(words: list[str], group: Any) -> str | None:
    """The words' command path if it names no command of `group`, or the path and an option
    that command does not take; else None."""
    command = group
    path: list[str] = []
    pending_value = False
    for word in words:
        if pending_value:
            pending_value = False
            continue
        if word.startswith("-") and word not in ("-", "--", "--help"):
            option = next((p for p in command.params if word.split("=")[0] in p.opts), None)
            if option is None:
                return " ".join(["mnist-pipeline", *path, word.split("=")[0]])
            takes_value = getattr(option, "is_flag", True) is False
            pending_value = takes_value and "=" not in word
            continue
        subcommands = getattr(command, "commands", None)
        if subcommands is None or is_placeholder(word):
            return None  # an argument of a command, or a stand-in for any command
        if word not in subcommands:
            return " ".join(["mnist-pipeline", *path, word])
        path.append(word)
        command = subcommands[word]
    return None


def shown_commands(text: str) -> Iterator[list[str]]:
    """The words after each `mnist-pipeline` (or `python -m mnist_pipeline`) in code spans and
    blocks, up to a shell separator."""
    for code in code_texts(text):
        for match in COMMAND.finditer(code):
            rest = SHELL_END.split(match.group(1), maxsplit=1)[0]
            yield rest.split()


@pytest.mark.parametrize("path", doc_files(), ids=rel)
def test_commands_shown_exist(path: Path) -> None:
    group = cli()
    missing = {
        found
        for words in shown_commands(path.read_text(encoding="utf-8"))
        if (found := unknown_command(words, group)) is not None
    }
    assert not missing, f"{rel(path)} shows commands that do not exist: {sorted(missing)}"


def test_command_check_sees_a_made_up_command() -> None:
    group = cli()
    text = (
        "Run `mnist-pipeline models frobnicate 3`, `mnist-pipeline train --no-such-flag`.\n"
        "```\nmnist-pipeline --root x trian\n.venv/bin/python -m mnist_pipeline modles list\n```\n"
    )
    found = {unknown_command(words, group) for words in shown_commands(text)}
    assert found == {
        "mnist-pipeline models frobnicate",
        "mnist-pipeline trian",
        "mnist-pipeline train --no-such-flag",
        "mnist-pipeline modles",
    }
    fine = "`mnist-pipeline <stage>`, `mnist-pipeline data add a.png --label 7 && mnist-pipeline`"
    assert {unknown_command(words, group) for words in shown_commands(fine)} == {None}


def param_names(model: type[BaseModel], prefix: str) -> set[str]:
    """`prefix.key` for every field of `model`, and `prefix.key.sub` for nested models."""
    names: set[str] = set()
    for key, field in model.model_fields.items():
        name = f"{prefix}.{key}"
        names.add(name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= param_names(annotation, name)
    return names


def documented_params() -> tuple[set[str], set[str]]:
    """(every section and dotted key of Params, the dotted names docs/params.md shows in code)."""
    sections = set(Params.model_fields)
    expected = set(sections)
    for section, field in Params.model_fields.items():
        assert isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        expected |= param_names(field.annotation, section)
    dotted = re.compile(
        r"(?<![\w./-])((?:" + "|".join(map(re.escape, sorted(sections))) + r")(?:\.\w+)*)(?![\w-])"
    )
    shown: set[str] = set()
    for code in code_texts(PARAMS_DOC.read_text(encoding="utf-8")):
        shown.update(dotted.findall(code))
    return expected, shown


def test_params_reference_lists_every_key() -> None:
    expected, shown = documented_params()
    missing = sorted(expected - shown)
    assert not missing, f"docs/params.md does not mention (as `section.key`): {missing}"


def test_params_reference_names_no_unknown_key() -> None:
    expected, shown = documented_params()
    # The keys of the older layout are named where the page says they are refused.
    unknown = sorted(name for name in shown - expected - set(MOVED_KEYS) if "." in name)
    assert not unknown, f"docs/params.md names keys that Params lacks: {unknown}"


@pytest.mark.parametrize(
    "path", [README, CHANGELOG, *sorted(p for p in DOCS.rglob("*") if p.is_file())], ids=rel
)
def test_no_development_history(path: Path) -> None:
    text = path.read_text(encoding="utf-8").lower()
    found = [phrase for phrase in HISTORY_PHRASES if phrase in text]
    assert not found, f"{rel(path)} speaks of its own development: {found}"
