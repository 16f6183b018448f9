"""JSON read from files, stores and requests, with a bound on nesting (pure, no I/O).

`json.loads` follows nesting by recursion: `[[[[...` a thousand levels deep raises
RecursionError, which is not a ValueError, so the callers' `except ValueError` handlers miss it
and a user sees a traceback; a little less deep parses, then breaks whatever walks the value
next (hashing, validation). No document this project writes nests more than a few levels, so
`loads` refuses anything deeper than MAX_DEPTH with the JSONDecodeError every caller already
handles.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64


class NestedTooDeep(json.JSONDecodeError):
    """JSON nested deeper than MAX_DEPTH; a JSONDecodeError, which every reader handles, whose
    message has no line and column (it is about the whole document)."""

    def __init__(self) -> None:
        super().__init__(f"nested deeper than {MAX_DEPTH} levels", "", 0)
        self.args = (self.msg,)

    def __reduce__(self) -> tuple[type, tuple[()]]:  # pickled (Prefect) and copied as itself
        return type(self), ()


def loads(data: str | bytes | bytearray) -> Any:
    """The JSON value of `data`; json.JSONDecodeError when it is not JSON, nests deeper than
    MAX_DEPTH arrays and objects, or holds a number Python refuses to convert (UnicodeDecodeError
    for bytes that are not UTF-8)."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise NestedTooDeep from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # an integer of over 4,300 digits: int() refuses to convert it
        if isinstance(exc, UnicodeDecodeError):
            raise
        raise json.JSONDecodeError(str(exc), "", 0) from None
    if not _depth_within(value, MAX_DEPTH):
        raise NestedTooDeep
    return value


def _depth_within(value: Any, limit: int) -> bool:
    """Whether `value` nests at most `limit` lists and dicts deep (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return False
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return True
