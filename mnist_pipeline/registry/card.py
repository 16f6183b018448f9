"""A version's card: what the caller says about it, plus the registry's own fields, sealed.

The registry adds `schema`, `name`, `version`, `created`, `inputs` (the caller's inputs hash,
if any), `decision`, `files` (each file's SHA-256) and `alias_trail` (the SHA-256 of the audit
trail's last stored event, None before the first: lost.py) to the caller's description, and
seals it with `card_sha256`, the SHA-256 of its canonical JSON without that key, so an edited
card is detected like an edited file. With a signing key the sealed card carries its Ed25519
`signature` (signing.py), outside the seal. Of the description the registry reads nothing:
what a model is and how it was made is the caller's business.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mnist_pipeline.core import json_text
from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.registry.keys import SHA256_RE, check_relpath

CARD_SCHEMA = 2  # 2: files are content-addressed blobs (1: files inside the version folder)
SEAL_KEY = "card_sha256"
SIGNATURE_KEY = "signature"  # {"key_id", "ed25519"} over the sealed card without this key
ALIAS_TRAIL_KEY = "alias_trail"  # the audit trail's last event when the version was committed
REGISTRY_FIELDS = (
    "schema", "name", "version", "created", "inputs", "files", ALIAS_TRAIL_KEY, SEAL_KEY
)  # fmt: skip
UNSEALED = (SEAL_KEY, SIGNATURE_KEY)


def canonical(card: dict[str, Any]) -> bytes:
    """Canonical JSON bytes: what the seal hashes and a signature covers."""
    return json.dumps(card, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def unsigned(card: dict[str, Any]) -> dict[str, Any]:
    """The card without its signature: what the signature covers."""
    return {k: v for k, v in card.items() if k != SIGNATURE_KEY}


def _digest(card: dict[str, Any]) -> str:
    return hashlib.sha256(
        canonical({k: v for k, v in card.items() if k not in UNSEALED})
    ).hexdigest()


def seal(card: dict[str, Any]) -> dict[str, Any]:
    """The card with its own content hash added."""
    return {**card, SEAL_KEY: _digest(card)}


def is_sealed(card: Any) -> bool:
    """True if `card` is a dict whose seal matches its content."""
    return isinstance(card, dict) and card.get(SEAL_KEY) == _digest(card)


def inputs_of(card: dict[str, Any]) -> str | None:
    """The inputs hash a version was submitted with (schema 1: its fingerprint's sha256)."""
    if card.get("schema", 1) < 2:
        return (card.get("fingerprint") or {}).get("sha256")
    return card.get("inputs")


def parse_card(data: bytes, name: str, version: int) -> dict[str, Any]:
    """The card stored as `data` for `name` v`version`, its seal and shape checked (not its
    signature: signing.py); RegistryError naming what is wrong."""
    label = f"{name} v{version}"
    try:
        card = json_text.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{label} card is not readable JSON: {exc}") from None
    if not is_sealed(card) or card.get("version") != version or card.get("name") != name:
        raise RegistryError(
            f"{label}: card.json was modified after registration "
            "(its card_sha256 seal does not match); refusing to trust it"
        )
    schema = card.get("schema", 1)
    if schema not in (1, CARD_SCHEMA) or isinstance(schema, bool):
        raise RegistryError(f"{label}: card.json has an unknown schema {schema!r}")
    files = card.get("files")
    if not isinstance(files, dict):
        raise RegistryError(f"{label}: card.json has no file table")
    for relpath, sha256 in files.items():  # a re-sealed card could name anything
        try:
            check_relpath(relpath)
        except RegistryError as exc:
            raise RegistryError(f"{label}: card.json lists an {exc}") from None
        if not (isinstance(sha256, str) and SHA256_RE.fullmatch(sha256)):
            raise RegistryError(f"{label}: card.json lists {relpath!r} without a SHA-256")
    return card


def file_problem(relpath: str, expected: str, data: bytes | None) -> str | None:
    """What is wrong with `data` as the recorded file `relpath` of SHA-256 `expected`, or None."""
    if not isinstance(expected, str):
        return f"{relpath} has no SHA-256 in its card"
    if data is None:
        return f"{relpath} is missing"
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        return f"{relpath} was modified (SHA-256 {actual[:12]}..., card says {expected[:12]}...)"
    return None
