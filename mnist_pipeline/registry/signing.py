"""Optional Ed25519 signatures on model cards: who registered a version, not only what it holds.

The seal (card.py) is an unkeyed SHA-256: it finds accidental or careless edits, but anyone who
can write the registry can change a file, fix its hash in the card and seal the card again. A
signature needs the private key. With a signing key, registration stores in the card a
`signature`: the key's id and an Ed25519 signature over the sealed card's canonical JSON
without it (whose file table holds every file's SHA-256, so the signature covers every file).
With `registry.trusted_keys` set, every read of a card checks its signature against those public
keys: a signature that does not verify, or one by an unknown key, is refused; with
`registry.require_signature`, an unsigned version is refused too.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mnist_pipeline.core import json_text
from mnist_pipeline.core.atomic import temp_beside
from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.core.regular_file import read_regular_stat
from mnist_pipeline.registry import keys
from mnist_pipeline.registry.card import SIGNATURE_KEY, canonical, unsigned

if TYPE_CHECKING:
    from mnist_pipeline.registry.storage import Storage

MAX_KEY_BYTES = 64 * 1024  # a PEM Ed25519 key is about 120 bytes


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the SHA-256 of its raw bytes, 16 hex digits."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _check_mode(path: Path, mode: int, owner: int, private: bool) -> None:
    """Refuse a key file others can misuse: a signing key of this user's that others may read
    or write (they could sign as this registry; as OpenSSH refuses a private key "too open",
    a key another user owns and shares with a group, say root's 0640 for a service's group,
    is left to its owner), and a trusted key anyone may write (they could swap in their own
    and sign what this host then trusts)."""
    if os.name != "posix":
        return
    if private and owner == os.getuid() and mode & 0o077:
        raise RegistryError(
            f"signing key {path} is open to other users (mode {mode:04o}): only its owner may "
            f"read it; run chmod 600 {path}"
        )
    if not private and mode & 0o002:
        raise RegistryError(
            f"trusted key {path} is writable by any user (mode {mode:04o}): whoever replaces "
            f"it chooses whose signatures this host accepts; run chmod 644 {path}"
        )


def _read_key(path: Path, private: bool) -> Any:
    what = "signing key" if private else "trusted key"
    try:  # a regular file only: a pipe would block every registry command, /dev/zero not end
        data, found = read_regular_stat(path, MAX_KEY_BYTES)
        mode, owner = stat.S_IMODE(found.st_mode), found.st_uid
    except FileNotFoundError:
        raise RegistryError(f"{what} {path} does not exist") from None
    except OSError as exc:  # a folder, no permission: the file, not its format
        raise RegistryError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        key = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # another curve: unsupported
        raise RegistryError(f"{what} {path} is not a PEM Ed25519 key: {exc}") from None
    expected = Ed25519PrivateKey if private else Ed25519PublicKey
    if not isinstance(key, expected):
        raise RegistryError(f"{what} {path} is not an Ed25519 key")
    # after the format: a .pub given as the signing key says so
    _check_mode(path, mode, owner, private)
    if not private:
        _check_folder(path)
    return key


def _check_folder(path: Path) -> None:
    """Refuse a trusted key below a folder any user may write, without the sticky bit (as /tmp
    has): anyone could rename or delete what is in it (the key, a link to it, a folder above
    it) and put their own key in its place. Every folder above the path as given and above the
    file it leads to is checked, as OpenSSH's StrictModes checks authorized_keys."""
    if os.name != "posix":
        return
    given, target = Path(os.path.abspath(path)), Path(os.path.realpath(path))
    for folder in dict.fromkeys([*given.parents, *target.parents]):
        try:
            mode = stat.S_IMODE(folder.stat().st_mode)
        except OSError:
            continue  # read a moment ago: it was there
        if mode & 0o002 and not mode & stat.S_ISVTX:
            raise RegistryError(
                f"trusted key {path} is below {folder}, which any user may write (mode "
                f"{mode:04o}): whoever replaces what is in it chooses whose signatures this "
                f"host accepts; run chmod o-w {folder}"
            )


class UntrustedKey(RegistryError):
    """A record signed by a key this host does not trust (another host may trust it)."""


class NotSigned(RegistryError):
    """An unsigned record where this host requires signatures (another host may not)."""


@dataclass(frozen=True)
class Signing:
    """The registry's signing key (if any), trusted public keys by id, and the policy."""

    key: Ed25519PrivateKey | None = None
    trusted: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    required: bool = False

    @classmethod
    def load(cls, signing_key: Path | None, trusted_keys: list[Path], required: bool) -> Signing:
        """Read the configured key files (RegistryError naming a missing or malformed one)."""
        key = _read_key(signing_key, private=True) if signing_key else None
        trusted = {key_id(k): k for k in (_read_key(p, private=False) for p in trusted_keys)}
        return cls(key, trusted, required)

    def sign(self, card: dict[str, Any]) -> dict[str, str] | None:
        """The signature of the sealed `card`, to store in it (None without a signing key)."""
        if self.key is None:
            return None
        signature = base64.b64encode(self.key.sign(canonical(unsigned(card)))).decode()
        return {"key_id": key_id(self.key.public_key()), "ed25519": signature}

    def require_signer(self) -> None:
        """RegistryError when signatures are required and this process cannot make one that
        verifies (no signing key, or one whose public key is not trusted): checked before any
        write, so nothing unsigned is stored; and a key that is not trusted is refused whether
        or not signatures are required, since what it signed could not be read back."""
        if not self.trusted:
            return
        if self.key is None and self.required:
            raise RegistryError(
                "refusing to write to the registry: registry.require_signature is on and no "
                "registry.signing_key is configured here, so what it writes would be unsigned"
            )
        if self.key is not None and key_id(self.key.public_key()) not in self.trusted:
            raise RegistryError(
                f"refusing to write to the registry: registry.signing_key (key "
                f"{key_id(self.key.public_key())}) is not among registry.trusted_keys"
            )

    def check(
        self, card: dict[str, Any], signature: Any, label: str, what: str = "card.json"
    ) -> None:
        """RegistryError unless `card` (or another signed record, `what`) with its `signature`
        (None: unsigned) meets the signature policy."""
        if not self.trusted:
            return
        if signature is None:
            if self.required:
                raise NotSigned(f"{label} is not signed (registry.require_signature)")
            return
        try:
            public = self.trusted.get(str(signature["key_id"]))
            raw = base64.b64decode(signature["ed25519"], validate=True)
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"{label}: its signature is unreadable ({exc})") from None
        if public is None:
            raise UntrustedKey(
                f"{label} is signed by key {signature['key_id']}, which is not trusted"
            )
        try:
            public.verify(raw, canonical(unsigned(card)))
        except InvalidSignature:
            raise RegistryError(
                f"{label}: the signature does not match {what} (forged or edited)"
            ) from None


def stored_signature(
    storage: Storage, name: str, card: dict[str, Any], label: str
) -> dict[str, str] | None:
    """A card's signature (None: unsigned): in the card (schema 2), or its card.sig (schema 1);
    one of another shape is refused on every host, trusting keys or not (well_formed)."""
    if card.get("schema", 1) >= 2:
        found = card.get(SIGNATURE_KEY)
    else:
        data = storage.read(keys.legacy_file(name, card["version"], keys.SIGNATURE_FILE))
        try:
            found = None if data is None else json_text.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RegistryError(f"{label}: {keys.SIGNATURE_FILE} is unreadable ({exc})") from None
    return None if found is None else well_formed(found, label)


def well_formed(signature: Any, label: str) -> dict[str, str]:
    """`signature` as {"key_id", "ed25519"} strings, or RegistryError: it lies outside the
    card's seal, and a host that trusts no key checks nothing else about it."""
    if not isinstance(signature, dict) or not all(
        isinstance(signature.get(name), str) for name in ("key_id", "ed25519")
    ):
        raise RegistryError(f"{label}: its signature is unreadable (not a key_id and ed25519)")
    return {"key_id": signature["key_id"], "ed25519": signature["ed25519"]}


def generate(path: Path) -> tuple[Path, str]:
    """Write a new Ed25519 private key to `path` (mode 0600, never overwritten) and its public
    key to `path`.pub; returns the public key's path and id."""
    if path.is_dir():  # also `.` and `/`, which have no name to add .pub to
        raise RegistryError(f"{path} is a folder: give the key file's path in it")
    if path.name.lower().endswith(".pub"):  # the secret would sit in a shareable-looking file
        raise RegistryError(f"{path}: name the private key's file, without .pub (PATH.pub is made)")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pub_path = path.with_name(path.name + ".pub")
    for target in (path, pub_path):
        if target.exists():
            raise RegistryError(f"{target} already exists; not overwriting a key")
    path.parent.mkdir(parents=True, exist_ok=True)
    _create_pair({path: (private, 0o600), pub_path: (public, 0o644)})
    return pub_path, key_id(key.public_key())


def _create_pair(files: dict[Path, tuple[bytes, int]]) -> None:
    """Create every file whole, with its mode, or none: each is written and flushed under a temp
    name, then linked to its own (which fails if it exists: never overwritten); a failure
    removes what this call created."""
    temps: dict[Path, Path] = {}
    created: list[Path] = []
    try:
        for target, (data, mode) in files.items():
            fd, temps[target] = temp_beside(target, ".tmp")
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), mode)
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        for target, temp in temps.items():
            try:
                _link_or_copy(temp, target, *files[target])
            except FileExistsError:
                raise RegistryError(f"{target} already exists; not overwriting a key") from None
            created.append(target)
    except BaseException:
        for target in created:
            target.unlink(missing_ok=True)
        raise
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)


def _link_or_copy(temp: Path, target: Path, data: bytes, mode: int) -> None:
    """`temp` linked to `target` (FileExistsError if it exists); on a file system without hard
    links (vfat, some network shares), `data` written to `target` created exclusively."""
    try:
        os.link(temp, target)
        return
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        target.unlink(missing_ok=True)  # created just now by this call: never half a key
        raise
