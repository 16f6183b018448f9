"""Names in a registry: model and alias names, version references, and the storage keys.

    <name>/blobs/sha256/<hex>   a file's bytes, content-addressed (shared by versions)
    <name>/v<N>/card.json       version N's sealed card: created once, the commit point
    <name>/aliases.json         alias map and history, replaced by compare-and-swap

Cards of schema 1 (registered before blobs existed) keep their files in `<name>/v<N>/<file>`
and their signature in `<name>/v<N>/card.sig`; readers look there for them (`legacy_file`).
"""

from __future__ import annotations

import re

from mnist_pipeline.core.errors import RegistryError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION_DIR_RE = re.compile(r"^v([1-9][0-9]{0,8})$")
REF_VERSION_RE = re.compile(r"^v?([0-9]+)$")
SIGNED_VERSION_RE = re.compile(r"[+-]v?[0-9]+|v[+-][0-9]+")  # "-1": a bad version, not an alias
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
CARD_FILE = "card.json"
SIGNATURE_FILE = "card.sig"
ALIASES_FILE = "aliases.json"
INPUTS = "inputs"  # inputs.py: a fingerprint that produced an existing version's files
LOST_ALIASES = "aliases-lost"  # unreadable alias documents a restart replaced, as they were
BLOBS = "blobs/sha256"


def check_name(value: str, what: str) -> str:
    """Return `value` if it is a safe model or alias name, else raise RegistryError."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value) or ".." in value:
        raise RegistryError(
            f"invalid {what} {value!r}: use 1-64 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no path separators, no '..')"
        )
    return value


def check_alias(value: str) -> str:
    """Like check_name; an alias also may not look like a version reference ("3", "v3", or
    one that parse_ref refuses, "v-1")."""
    check_name(value, "alias")
    if REF_VERSION_RE.fullmatch(value) or SIGNED_VERSION_RE.fullmatch(value):
        raise RegistryError(f"invalid alias {value!r}: it would read as a version number")
    return value


MAX_VERSION_DIGITS = 18


def parse_ref(ref: str | int) -> int | str:
    """What a reference names: a version number ("3", "v3", 3; from 1) or an alias (its name
    checked)."""
    text = str(ref).strip()
    match = REF_VERSION_RE.fullmatch(text)
    if match:
        if len(match.group(1)) > MAX_VERSION_DIGITS:  # int() refuses 4,300 digits and more
            raise RegistryError(
                f"invalid version {text[:20]}...: over {MAX_VERSION_DIGITS} digits, no "
                "registry holds that many versions"
            )
        if int(match.group(1)) > 0:
            return int(match.group(1))
    if match or SIGNED_VERSION_RE.fullmatch(text):  # "0", "v0", "-1": no version's number
        raise RegistryError(f"invalid version {ref!r}: versions count up from 1 (3 or v3)")
    return check_alias(text)


def check_relpath(relpath: str) -> str:
    """A file's name inside a version ("model.onnx", "plots/x.png"): relative, no '..'."""
    parts = relpath.split("/")
    if not relpath or relpath.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise RegistryError(f"invalid file name {relpath!r} in a version")
    if relpath in (CARD_FILE, SIGNATURE_FILE):
        raise RegistryError(f"{relpath!r} is the registry's own file name")
    return relpath


def card_key(name: str, version: int) -> str:
    return f"{name}/v{version}/{CARD_FILE}"


def legacy_file(name: str, version: int, relpath: str) -> str:
    return f"{name}/v{version}/{relpath}"


def blob_key(name: str, sha256: str) -> str:
    if not SHA256_RE.fullmatch(sha256):
        raise RegistryError(f"not a SHA-256 digest: {sha256!r}")
    return f"{name}/{BLOBS}/{sha256}"


def aliases_key(name: str) -> str:
    return f"{name}/{ALIASES_FILE}"


def inputs_key(name: str, fingerprint: str) -> str:
    if not SHA256_RE.fullmatch(fingerprint):
        raise RegistryError(f"not a SHA-256 digest: {fingerprint!r}")
    return f"{name}/{INPUTS}/{fingerprint}.json"


def lost_aliases_key(name: str, sha256: str) -> str:
    """Where a restart keeps the bytes of an alias document it could not read (never removed)."""
    return f"{name}/{LOST_ALIASES}/{sha256}.json"


def committed_versions(name: str, keys: list[str]) -> list[int]:
    """Version numbers whose card exists among `keys` (a listing of `name/`), ascending."""
    found = []
    for key in keys:
        parts = key.removeprefix(f"{name}/").split("/")
        if len(parts) == 2 and parts[1] == CARD_FILE and (m := VERSION_DIR_RE.fullmatch(parts[0])):
            found.append(int(m.group(1)))
    return sorted(found)
