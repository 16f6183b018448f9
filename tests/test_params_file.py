"""A recipe's `extends`: the project's params file read first, the recipe merged over it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from mnist_pipeline.core.errors import ParamsError
from mnist_pipeline.core.params import load_params
from mnist_pipeline.core.params_file import merged, read_params_file
from tests.conftest import REPO_ROOT


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_a_shipped_recipe_keeps_the_projects_own_settings(tmp_path: Path) -> None:
    """A project that keeps its registry elsewhere and signs: a recipe run registers there."""
    project = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    project["registry"] = {"root": "s3://team-models/mnist", "approval": "required"}
    project["train"]["seed"] = 7
    write(tmp_path / "params.yaml", project)
    recipe = write(tmp_path / "recipes" / "q.yaml", (REPO_ROOT / "recipes/quick.yaml").read_text())
    loaded = load_params(recipe, environ={})
    assert loaded.registry.root == "s3://team-models/mnist"
    assert loaded.registry.approval == "required"
    assert loaded.train.seed == 7  # key by key: what the recipe does not set stays
    assert (loaded.train.epochs, loaded.train.batch_size) == (3, 256)


def test_merging_is_by_section_and_key_and_an_empty_section_changes_nothing() -> None:
    base = {"train": {"epochs": 12, "seed": 1}, "data": {"mirrors": ["a", "b"]}}
    over = {"train": {"epochs": 3}, "data": {"mirrors": ["c"]}, "evaluate": None}
    assert merged(base, over) == {
        "train": {"epochs": 3, "seed": 1},
        "data": {"mirrors": ["c"]},  # a list is replaced, not appended to
        "evaluate": None,
    }
    assert merged(base, {"train": None}) == base
    # nested mappings merge key by key too: one promotion setting keeps the others
    deep = {"registry": {"root": "r", "promotion": {"significance": 0.05, "min_gain": 0.0}}}
    one = {"registry": {"promotion": {"significance": 0.01}}}
    assert merged(deep, one) == {
        "registry": {"root": "r", "promotion": {"significance": 0.01, "min_gain": 0.0}}
    }
    assert deep["registry"]["promotion"]["significance"] == 0.05  # the base left as it was


def test_recipes_can_extend_recipes(tmp_path: Path) -> None:
    write(tmp_path / "params.yaml", {"train": {"epochs": 12, "seed": 5}})
    write(tmp_path / "r" / "a.yaml", {"extends": "../params.yaml", "train": {"epochs": 3}})
    write(tmp_path / "r" / "b.yaml", {"extends": "a.yaml", "train": {"batch_size": 64}})
    data, source = read_params_file(tmp_path / "r" / "b.yaml")
    assert data == {"train": {"epochs": 3, "seed": 5, "batch_size": 64}}
    assert source == (
        f"{tmp_path}/r/b.yaml extending {tmp_path}/r/a.yaml extending {tmp_path}/r/../params.yaml"
    )


def test_a_recipe_may_extend_a_params_file_of_comments_only(tmp_path: Path) -> None:
    write(tmp_path / "params.yaml", "# every default\n")
    recipe = write(tmp_path / "r.yaml", {"extends": "params.yaml", "train": {"epochs": 3}})
    assert load_params(recipe, environ={}).train.epochs == 3


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"r.yaml": {"extends": "nope.yaml"}},
            r"not found: .*nope\.yaml \(extends of .*r\.yaml\)$",
        ),
        ({"r.yaml": {"extends": ["params.yaml"]}}, r"r\.yaml: extends must name a params file"),
        ({"r.yaml": {"extends": " "}}, r"extends must name a params file, got ' '"),
        ({"r.yaml": {"extends": "a\0b"}}, r"extends must name a params file, got 'a\\x00b'"),
        ({"r.yaml": {"extends": "r.yaml"}}, r"r\.yaml: extends: r\.yaml extends itself"),
        (
            {"r.yaml": {"extends": "s.yaml"}, "s.yaml": {"extends": "r.yaml"}},
            r"s\.yaml: extends: r\.yaml extends itself through .*r\.yaml",
        ),
        ({"r.yaml": {"extends": "s.yaml"}, "s.yaml": "- a list\n"}, r"s\.yaml \(extends of"),
        ({"r.yaml": {"extends": "s.yaml"}, "s.yaml": "a: [\n"}, r"s\.yaml: not valid YAML"),
        (
            {
                "r.yaml": {"extends": "s.yaml", "train": {"epochs": 2}},
                "s.yaml": {"train": {"epoch": 2}},
            },
            r"r\.yaml extending .*s\.yaml: train\.epoch: unknown key",
        ),
    ],
)
def test_an_extends_it_cannot_use_is_one_line_naming_the_file(
    tmp_path: Path, files: dict[str, object], message: str
) -> None:
    for name, data in files.items():
        write(tmp_path / name, data)
    with pytest.raises(ParamsError, match=message) as refused:
        load_params(tmp_path / "r.yaml", environ={})
    assert "\n" not in str(refused.value)


def test_a_params_file_that_is_a_pipe_or_a_device_is_refused_unread(tmp_path: Path) -> None:
    """A FIFO would block the command for good and /dev/zero fill its memory."""
    fifo = tmp_path / "params.yaml"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(ParamsError, match=r"not a regular file \(a device, pipe or socket\)"):
            load_params(path, environ={})


def test_a_params_file_larger_than_any_params_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "# padding\n" * 100_001)
    with pytest.raises(
        ParamsError,
        match=r"params.yaml: 1,000,010 bytes, more than the 1,000,000 this file may hold$",
    ):
        load_params(path, environ={})


def test_nesting_too_deep_to_parse_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "train: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ParamsError) as refused:
        load_params(path, environ={})
    assert (
        str(refused.value)
        == f"{path}: not valid YAML: nested too deeply (lists or mappings inside each other)"
    )


def test_a_refused_value_is_quoted_short_however_large_it_expands(tmp_path: Path) -> None:
    """Seven lines of anchors expand to 9^7 strings (the "billion laughs"); the error quotes
    the value cut short instead of printing every one of them."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for name, below in zip("bcdefg", "abcdef", strict=True):
        lines.append(f"{name}: &{name} [{', '.join(['*' + below] * 9)}]")
    path = write(tmp_path / "params.yaml", "\n".join(lines) + "\ntrain:\n  epochs: *g\n")
    with pytest.raises(ParamsError) as refused:
        load_params(path, environ={})
    message = str(refused.value)
    assert "train.epochs" in message and "[[[...], [...], " in message, message
    assert max(len(line) for line in message.splitlines()) < 400
    path.write_text("\n".join(lines) + "\nextends: *g\n")
    with pytest.raises(ParamsError, match=r"extends must name a params file, got \[\[\["):
        load_params(path, environ={})


def test_an_extends_that_is_a_link_to_itself_is_one_line(tmp_path: Path) -> None:
    """A symbolic link loop named by `extends`: the OS's error reading it, not a RuntimeError
    traceback from resolving the chain."""
    (tmp_path / "loop.yaml").symlink_to("loop.yaml")
    write(tmp_path / "r.yaml", {"extends": "loop.yaml"})
    with pytest.raises(ParamsError, match=r"loop\.yaml: Too many levels of symbolic links$"):
        load_params(tmp_path / "r.yaml", environ={})
