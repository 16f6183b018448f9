"""YAML as DVC reads it: PyYAML's safe loader with YAML 1.2 scalars, no duplicate keys, no merge
keys, and one-line error messages (pure, no I/O).

DVC reads params.yaml with ruamel.yaml, which follows YAML 1.2; PyYAML follows YAML 1.1. Left to
itself PyYAML reads `012` as 10 (octal), `1:30` as 90 (base 60), `on`/`yes` as true and `1e-3` as a
string, where DVC reads 12, "1:30", "on", "yes" and 0.001: one file, two meanings. The loader
here replaces PyYAML's bool, int and float rules with YAML 1.2's (as ruamel.yaml writes them,
underscores between digits allowed), so a value means what `dvc params diff` shows.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from typing import Any

import yaml

_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"

_BOOL_12 = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT_12 = re.compile(  # a digit after the prefix: `0x_` is text (int() could not read it)
    r"^[-+]?(?:0b_*[01][01_]*|0o_*[0-7][0-7_]*|0x_*[0-9a-fA-F][0-9a-fA-F_]*|[0-9][0-9_]*)$"
)
_FLOAT_12 = re.compile(
    r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?   # 1.5, 1., 1.5e3
         |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+                  # 1e-3
         |[-+]?\.[0-9_]*[0-9][0-9_]*(?:[eE][-+][0-9]+)?     # .5, -.5, .5e-3 (a signed exponent)
         |[-+]?\.(?:inf|Inf|INF)
         |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)


class _StrictLoader(yaml.SafeLoader):
    """A safe loader with YAML 1.2 scalars that refuses a mapping with the same key twice (the
    YAML spec forbids it)."""


# PyYAML's YAML 1.1 rules for bool, int and float out; the rest (null, timestamps, ...) kept
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rule) for tag, rule in rules if tag not in (_BOOL, _INT, _FLOAT)]
    for first, rules in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(_BOOL, _BOOL_12, list("tTfF"))
_StrictLoader.add_implicit_resolver(_INT, _INT_12, list("-+0123456789"))
_StrictLoader.add_implicit_resolver(_FLOAT, _FLOAT_12, list("-+0123456789."))


def _int_12(loader: _StrictLoader, node: yaml.ScalarNode) -> int:
    """An int as YAML 1.2 spells it: a leading zero is decimal (`012` is 12), octal is `0o`."""
    text = str(loader.construct_scalar(node)).replace("_", "")
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    base = {"0b": 2, "0o": 8, "0x": 16}.get(digits[:2].lower(), 10)
    return sign * int(digits[2:] if base != 10 else digits, base)


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # its keys would escape this check
            raise yaml.constructor.ConstructorError(
                None,
                None,
                "merge keys (<<) are not read here: write the keys out",
                key_node.start_mark,
            )
        key = loader.construct_object(key_node)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                None, None, f"a mapping key must be a scalar, not {key!r}", key_node.start_mark
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(_INT, _int_12)
_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_yaml_strict(text: str) -> Any:
    """yaml.safe_load with YAML 1.2 scalars (as DVC reads them), but a duplicate key is a
    yaml.YAMLError instead of a silent overwrite, and so is nesting too deep for the parser (a
    RecursionError)."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise yaml.YAMLError("nested too deeply (lists or mappings inside each other)") from None
    except (ValueError, OverflowError) as exc:  # a constructor's: a scalar it cannot convert
        raise yaml.YAMLError(f"a value that cannot be read: {exc}") from None
    except (KeyError, AttributeError, TypeError):  # PyYAML's, for a tag its text cannot be:
        # `!!bool maybe` (a KeyError), `!!timestamp garbage` (an AttributeError)
        raise yaml.YAMLError(
            "a value that cannot be read as its explicit tag (!!bool, !!timestamp, ...) says"
        ) from None


def describe_yaml_error(exc: yaml.YAMLError) -> str:
    """One line: where in the text (when known) and the problem."""
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"not valid YAML{where}: {problem}"
