"""Command-line value types the benchmarks share: a bad value is argparse's one-line usage
error (exit status 2) before anything is fetched or trained."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _finite(text: str, zero_allowed: bool) -> float:
    """A finite number above 0 (or 0 itself, when `zero_allowed`)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value >= 0 if zero_allowed else value > 0) or value == float("inf"):
        bound = ">= 0" if zero_allowed else "> 0"
        raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _finite(text, zero_allowed=False)


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    return _finite(text, zero_allowed=True)


def int_list(text: str) -> list[int]:
    """Comma-separated integers, at least one, none twice (e.g. seeds: 1,2,3)."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not comma-separated whole numbers: {text!r} (e.g. 1,2,3)"
        ) from None
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"a number given twice: {text!r}")
    return values


def count_list(text: str) -> list[int]:
    """Comma-separated counts (`int_list`, each 0 or more)."""
    values = int_list(text)
    if min(values) < 0:
        raise argparse.ArgumentTypeError(f"a count below 0: {text!r}")
    return values


def positive_int_list(text: str) -> list[int]:
    """Comma-separated integers (`int_list`), each 1 or more."""
    values = int_list(text)
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"each must be 1 or more: {text!r}")
    return values


def digit(text: str) -> int:
    """A digit class, 0 to 9."""
    if text.strip() not in tuple("0123456789"):
        raise argparse.ArgumentTypeError(f"not a digit from 0 to 9: {text!r}")
    return int(text)


def existing_file(text: str) -> Path:
    """A path to a file that is there."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no file at {text}")
    return Path(text)


def existing_folder(text: str) -> Path:
    """A path to a folder that is there."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"no folder at {text}")
    return Path(text)


def name_list(text: str, choices: tuple[str, ...]) -> list[str]:
    """Comma-separated names out of `choices`, at least one, none twice."""
    names = [part.strip() for part in text.split(",")]
    unknown = [name for name in names if name not in choices]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {', '.join(map(repr, unknown))}: choose from {', '.join(choices)}"
        )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a name given twice: {text!r}")
    return names


def mirrors(text: str) -> list[str]:
    """Comma-separated MNIST mirrors as MNIST_MIRROR takes them: URLs (https://, file://) as
    given, folder paths made absolute (the benchmarks run stages in folders of their own)."""
    found = [part.strip() for part in text.split(",") if part.strip()]
    if not found:
        raise argparse.ArgumentTypeError(f"names no mirror: {text!r}")
    return [m if "://" in m else str(Path(m).resolve()) for m in found]


def add_mirror_option(parser: argparse.ArgumentParser) -> None:
    """`--mirror` (parsed by `mirrors`): MNIST_MIRROR when set, else ../shared/mnist."""
    parser.add_argument(
        "--mirror",
        type=mirrors,
        default=os.environ.get("MNIST_MIRROR", "").strip() or "../shared/mnist",
    )
