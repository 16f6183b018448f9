"""Every command's --help shows each option's help text whole (Rich markup eats `[...]`), and a
flag as a flag: no value placeholder beside it (typer 0.29 shows `<bool>`, as if one were due)."""

from __future__ import annotations

import pytest
import typer
from typer.core import TyperArgument, TyperOption
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app


def _commands(group: object, path: tuple[str, ...] = ()):
    yield path, group
    for name, command in getattr(group, "commands", {}).items():
        yield from _commands(command, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(p) or "(top)" for p, _ in COMMANDS]
)
def test_help_shows_every_option_help_and_default_whole(
    path: tuple[str, ...], command: typer.core.TyperCommand, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one line per option: nothing wrapped
    shown = CliRunner().invoke(app, [*path, "--help"])
    assert shown.exit_code == 0, shown.output
    for param in command.params:
        if isinstance(param, TyperOption) and param.help:
            assert param.help in shown.output, (param.name, shown.output)
        if isinstance(param, TyperOption) and isinstance(param.show_default, str):
            assert f"[default: ({param.show_default})]" in shown.output, param.name
    usage = next(line for line in shown.output.splitlines() if "Usage:" in line)
    for param in command.params:  # an argument that takes several values says so, as typer's own
        if isinstance(param, TyperArgument) and param.nargs == -1:
            assert f"{param.make_metavar(None).strip('[]{}')}" in usage, (param.name, usage)
            assert "..." in param.make_metavar(None), (param.name, usage)
    flags = [p for p in command.params if isinstance(p, TyperOption) and p.is_flag]
    for name in ["--help", *(p.opts[0] for p in flags)]:
        lines = [line for line in shown.output.splitlines() if f" {name} " in line]
        assert lines, (name, shown.output)
        for line in lines:
            assert "<bool>" not in line and "BOOLEAN" not in line, (name, line)


def test_the_walk_reaches_every_command_and_its_options() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"serve", "models promote", "data accept", "serve-report"} <= names
    serve = dict(COMMANDS)[("serve",)]
    options = [p.name for p in serve.params if isinstance(p, TyperOption)]
    assert options == ["host", "port", "model", "workers"]  # seen as options, so checked above
