"""User text shown or stored safely: the characters that break or hide a line (torch-free)."""

from __future__ import annotations

import re

# Control characters, and the invisible ones that break or reorder a line (line and paragraph
# separators, zero-width and bidirectional marks, the byte-order mark).
CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]"
)
UNDECODED = re.compile("[\ud800-\udfff]")  # surrogates: bytes Python could not decode


def printable(text: str) -> str:
    """`text` with each control character (and undecodable byte) written as its escape (\\n,
    \\x1b, \\udce9), for display: a name cannot fake a line of output or drive a terminal."""
    escape = lambda found: repr(found.group())[1:-1]  # noqa: E731
    return UNDECODED.sub(escape, CONTROL.sub(escape, text))


def empty_path(text: str) -> str | None:
    """Why a path typed as `text` is no path (`Path("")` and a blank one would name a folder
    no one typed: the current one, or a name of spaces), or None."""
    return None if text.strip() else f"the path is {'blank' if text else 'empty'}"
