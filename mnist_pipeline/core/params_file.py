"""Reading a params file: its YAML as data, with a recipe's `extends` resolved.

A recipe (recipes/quick.yaml) changes a few settings of the project's own params file:
`extends: ../params.yaml` (relative to the recipe's folder) reads that file first and merges
the recipe over it section by section, key by key, so a registry, signing key or mirror set
there stays in force whatever recipe a run uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mnist_pipeline.core.errors import ParamsError
from mnist_pipeline.core.layout import resolved
from mnist_pipeline.core.regular_file import FileTooLarge, NotRegularFile, read_regular
from mnist_pipeline.core.validators import quoted
from mnist_pipeline.core.yaml_text import describe_yaml_error, load_yaml_strict

EXTENDS = "extends"
MAX_BYTES = 1_000_000  # the project's params.yaml is about 12 kB


def read_params_file(path: Path, extended_by: tuple[Path, ...] = ()) -> tuple[Any, str]:
    """The YAML data of the params file at `path`, its `extends` merged under it, and how
    errors in it name it ("recipes/quick.yaml extending recipes/../params.yaml"); ParamsError
    naming the file when it cannot be read, is not YAML, or extends one it cannot use."""
    try:
        text = _read_text(path)
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    except FileNotFoundError:
        named_by = f" ({EXTENDS} of {extended_by[-1]})" if extended_by else ""
        raise ParamsError(f"params file not found: {path}{named_by}") from None
    except OSError as exc:
        raise ParamsError(f"cannot read params file {path}: {exc.strerror}") from None
    try:
        raw = load_yaml_strict(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: {describe_yaml_error(exc)}") from None
    if not isinstance(raw, dict) or EXTENDS not in raw:
        return raw, str(path)
    base = raw.pop(EXTENDS)
    if not isinstance(base, str) or not base.strip() or "\0" in base:  # no name holds a NUL
        raise ParamsError(f"{path}: {EXTENDS} must name a params file, got {quoted(base)}")
    base_path = path.parent / base
    chain = (*extended_by, path)
    if resolved(base_path) in {resolved(p) for p in chain}:  # a link loop: as written
        raise ParamsError(f"{path}: {EXTENDS}: {base} extends itself through {chain[0]}")
    inherited, source = read_params_file(base_path, chain)
    if inherited is None:  # a file of comments only: every default
        inherited = {}
    if not isinstance(inherited, dict):
        raise ParamsError(f"{base_path} ({EXTENDS} of {path}): top level must be a mapping")
    return merged(inherited, raw), f"{path} extending {source}"


def _read_text(path: Path) -> str:
    """The file's text; a pipe, device or socket (which could block or never end) or a file far
    larger than any params file is refused unread (a folder: an OSError for the caller)."""
    try:
        return read_regular(path, MAX_BYTES).decode("utf-8")
    except (NotRegularFile, FileTooLarge) as exc:
        raise ParamsError(f"params file {path}: {exc.strerror}") from None


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` merged over `base`: mappings key by key (an empty section changes nothing), any
    other value replacing the base's."""
    result = dict(base)
    for key, value in over.items():
        below = base.get(key)
        if isinstance(below, dict) and (value is None or isinstance(value, dict)):
            result[key] = merged(below, value or {})
        else:
            result[key] = value
    return result
