"""Checks params.py needs beyond types and ranges: storage locations and mirrors (cron and time
zones: schedule_checks.py); and how its validation errors are told (pure, no I/O)."""

from __future__ import annotations

import difflib
import re
import reprlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse, urlsplit

from pydantic import BaseModel, ValidationError

from mnist_pipeline.core.bucket_names import RULE, valid_bucket

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
STORAGE_SCHEMES = ("s3", "file")


MIRROR_SCHEMES = ("https", "http", "file")


def _scheme(location: str, supported: tuple[str, ...], what: str) -> str | None:
    """The lowercase scheme of `location` if it looks like a URL (None for a path: a one-letter
    scheme is a Windows drive); ValueError when it is not one of `supported` (`what` says
    what is)."""
    found = _SCHEME.match(location)
    if found is None or len(found.group(1)) == 1:
        return None
    scheme = found.group(1).lower()
    if scheme not in supported:
        raise ValueError(f"{location!r}: unsupported scheme {scheme!r} ({what})")
    return scheme


def _unpadded(location: str) -> str:
    """`location` if no white space surrounds it: " s3://b/p" would pass as a folder named so,
    its scheme never checked."""
    if location != location.strip():
        raise ValueError(f"{location!r} starts or ends with white space: remove it")
    return location


def check_mirror(mirror: str) -> str:
    """`mirror` if it is a folder path or an https://, http:// or file:// URL; ValueError naming
    what is wrong with anything else that looks like a URL."""
    _unpadded(mirror)
    scheme = _scheme(
        mirror,
        MIRROR_SCHEMES,
        "a mirror is an https://, http:// or file:// URL or a folder; a DVC remote is pulled "
        "with `dvc pull`, docs/dvc.md",
    )
    if scheme is not None and not mirror[len(scheme) + 1 :].startswith("//"):
        raise ValueError(f"{mirror!r} is not a URL: write {scheme}://... (two slashes)")
    if scheme is not None and scheme.lower() != "file":
        _has_host(mirror, scheme)
    _no_nul(mirror, scheme)
    if scheme is not None and ("?" in mirror or "#" in mirror):  # fetch appends /<file name>
        raise ValueError(f"{mirror!r}: a mirror URL takes no ?query or #fragment")
    return mirror


def _has_host(url: str, scheme: str) -> None:
    """ValueError for a network URL that names no host or does not parse (a bad port, an
    unclosed IPv6 bracket): fetch would only say each file was not found."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a valid URL ({exc})") from None
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host: write {scheme}://HOST/...")


def _no_nul(location: str, scheme: str | None) -> None:
    """ValueError for a NUL character, or `%00` in a file:// URL (no path can hold one)."""
    if "\0" in location or (scheme == "file" and "%00" in location):
        raise ValueError(f"{location!r} holds a NUL character")


def check_location(location: str) -> str:
    """`location` if it is a folder path, a file:// URL or s3://BUCKET/PREFIX; ValueError naming
    what is wrong with anything else that looks like a URL (a one-letter scheme is a Windows
    drive: a path)."""
    what = "supported: a folder path, a file:// URL, s3://BUCKET/PREFIX"
    if not location.strip():  # a folder named by spaces: a slip, never meant
        raise ValueError(f"{location!r} is blank: give a folder path or a URL ({what})")
    _unpadded(location)
    scheme = _scheme(location, STORAGE_SCHEMES, what)
    _no_nul(location, scheme)
    if scheme is None and location.startswith("~"):  # a shell's, not a path's
        raise ValueError(
            f"{location!r}: '~' is not expanded here (a folder named '~' would be made in the "
            "project): write the home folder's path"
        )
    if scheme is None:
        return location
    if scheme == "s3" and not location[len(scheme) + 1 :].startswith("//"):  # file:/x: a path
        raise ValueError(f"{location!r} is not a URL: write {scheme}://... (two slashes)")
    try:
        parsed = urlparse(location)
    except ValueError as exc:
        raise ValueError(f"{location!r} is not a valid URL: {exc}") from None
    if parsed.query or parsed.fragment or location.endswith(("?", "#")):
        raise ValueError(f"{location!r}: a storage location takes no ?query or #fragment")
    if scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"{location!r} names no bucket: write s3://BUCKET/PREFIX")
        if not valid_bucket(parsed.netloc):  # a port, upper case, '_': refused here, not later
            raise ValueError(f"{location!r}: {parsed.netloc!r} is not a valid bucket name ({RULE})")
        _check_prefix(location, parsed.path)
    elif parsed.netloc not in ("", "localhost") or not parsed.path:  # file:
        raise ValueError(
            f"{location!r}: a file:// URL names a folder on this machine (file:///path)"
        )
    return location


def _check_prefix(location: str, path: str) -> None:
    """ValueError for an S3 prefix part that is empty ('//') or starts with '.' ('.', '..',
    '.x'): object keys are plain names."""
    if "//" in path:  # 's3://b//x' is not 's3://b/x'
        raise ValueError(f"{location!r}: an empty part ('//') in the prefix")
    hidden = [part for part in path.split("/") if part.startswith(".")]
    if hidden:
        raise ValueError(
            f"{location!r}: {hidden[0]!r} in the prefix (its parts may not start with '.')"
        )


def _section(model: type[BaseModel], name: int | str) -> type[BaseModel] | None:
    """The model of `model`'s field `name` when that field is a (nested) section, else None."""
    field = model.model_fields.get(str(name))
    nested = field.annotation if field is not None else None
    return nested if isinstance(nested, type) and issubclass(nested, BaseModel) else None


def empty_sections_as_mappings(raw: dict[str, Any], model: type[BaseModel]) -> None:
    """A section (or nested section) written with no keys, e.g. `train:` with every line
    commented out, is YAML's null: read it as an empty mapping, in place."""
    for name in model.model_fields:
        nested = _section(model, name)
        if nested is None:
            continue
        if name in raw and raw[name] is None:
            raw[name] = {}
        if isinstance(raw.get(name), dict):
            empty_sections_as_mappings(raw[name], nested)


def _shown_values() -> reprlib.Repr:
    """How a refused value is quoted: in full when short, cut (`...`) when long or nested."""
    shown = reprlib.Repr()
    shown.maxstring = shown.maxother = 80
    shown.maxlist = shown.maxtuple = shown.maxdict = shown.maxset = 8
    shown.maxlevel = 2
    return shown


_SHOWN = _shown_values()


def quoted(value: Any, limit: int = 120) -> str:
    """`value` as a refusal quotes it: its repr, cut short (`...`) past `limit` characters."""
    text = _SHOWN.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def problems(lines: list[str]) -> str:
    """One problem is one line; several are listed under a heading, one line each."""
    return lines[0] if len(lines) == 1 else "invalid params:\n  " + "\n  ".join(lines)


def _unknown_key(loc: tuple[int | str, ...], model: type[BaseModel], listed: set[str]) -> str:
    """'unknown key' with the nearest allowed key, or every allowed key when none is near (once
    per section: `listed` holds those whose keys a line above named)."""
    section: type[BaseModel] | None = model
    for part in loc[:-1]:  # the (nested) section that holds the key
        section = _section(section, part) if section is not None else None
    if section is None:
        return "unknown key"
    allowed = list(section.model_fields)
    near = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
    if near:
        return f"unknown key; did you mean {near[0]!r}?"
    where = ".".join(map(str, loc[:-1])) or "the top level"
    if where in listed:
        return "unknown key (the keys allowed are listed above)"
    listed.add(where)
    return f"unknown key; {where} takes {', '.join(allowed)}"


def _where(key: str, source: str, set_elsewhere: Mapping[str, str]) -> str:
    """Where the value at dotted `key` came from: `set_elsewhere` maps each key set outside the
    file to how it was set ("override", "MNIST_MIRROR")."""
    for dotted, how in set_elsewhere.items():
        if key == dotted or key.startswith(dotted + "."):
            return f"{key} ({how})" if how != "override" else f"override {key}"
    inside = [f"{how} {d}" for d, how in set_elsewhere.items() if d.startswith(key + ".")]
    return f"{source}: {key} (with {', '.join(inside)})" if inside else f"{source}: {key}"


def describe_errors(
    error: ValidationError,
    source: str,
    model: type[BaseModel],
    set_elsewhere: Mapping[str, str] | None = None,
) -> str:
    """One line per problem of `error` (validating `model` from `source`; `set_elsewhere`: the
    dotted keys given outside it, and how): where the value came from, the key, the rule it
    breaks and the value given. A rule about a whole section names the overrides inside it."""
    lines: list[str] = []
    listed: set[str] = set()
    found = error.errors()
    for item in found:
        if item["type"] == "too_short" and _inside(item["loc"], found):
            continue  # a list whose item was refused: that item's line says what is wrong
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        where = _where(key, source, set_elsewhere or {})
        if item["type"] == "extra_forbidden":
            rule = _unknown_key(item["loc"], model, listed)
        elif item["type"] == "model_type":  # pydantic would name its class
            rule = "expected a mapping of keys"
        else:
            rule = item["msg"].removeprefix("Value error, ")  # a model validator's own words
        if not item["loc"]:  # a rule across sections: its message names the keys
            lines.append(f"{where}: {rule}")
            continue
        lines.append(f"{where}: {rule} (got {quoted(item.get('input'))})")
    return problems(lines)


def _inside(loc: tuple[int | str, ...], found: list[Any]) -> bool:
    """Whether another of the errors `found` is about something inside `loc`."""
    return any(len(e["loc"]) > len(loc) and tuple(e["loc"][: len(loc)]) == loc for e in found)


def check_origin(origin: str) -> bool:
    """Whether `origin` is a web origin as browsers write it in the `Origin` header:
    http(s)://host[:port], lowercase, nothing after the port."""
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number or too large
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and "@" not in parts.netloc
        and origin == f"{parts.scheme}://{parts.netloc}"
        and origin == origin.lower()
    )
