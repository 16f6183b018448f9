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


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


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
