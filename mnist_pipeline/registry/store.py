"""On-disk layout of one model: immutable version folders, atomic commit, locking, hashing.

    <root>/<name>/
        .lock            filelock for every write (version allocation, commit, aliases)
        aliases.json     alias map + history (see aliases.py), replaced atomically
        v1/, v2/, ...    one folder per version; read-only files, card.json lists their SHA-256
        .tmp-<uuid>/     a registration in progress (or a stale one left by a crash)

A version is written into a `.tmp-*` folder and renamed into place while the lock is held, so a
crash at any point leaves either no new version or a complete one. Readers take no lock.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.data.manifest import file_sha256

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION_DIR_RE = re.compile(r"^v([1-9][0-9]{0,8})$")
REF_VERSION_RE = re.compile(r"^v?([0-9]+)$")
CARD_FILE = "card.json"
SIGNATURE_FILE = "card.sig"  # written by signing.py
ALIASES_FILE = "aliases.json"
LOCK_FILE = ".lock"
TMP_PREFIX = ".tmp-"
LOCK_TIMEOUT_S = 120.0


def check_name(value: str, what: str) -> str:
    """Return `value` if it is a safe model or alias name, else raise RegistryError."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value) or ".." in value:
        raise RegistryError(
            f"invalid {what} {value!r}: use 1-64 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no path separators, no '..')"
        )
    return value


def check_alias(value: str) -> str:
    """Like check_name; an alias also may not look like a version reference ("3", "v3")."""
    check_name(value, "alias")
    if REF_VERSION_RE.fullmatch(value):
        raise RegistryError(f"invalid alias {value!r}: it would read as a version number")
    return value


def version_dir_name(version: int) -> str:
    return f"v{version}"


def list_versions(model_dir: Path) -> list[int]:
    """Committed version numbers, ascending (temp folders and other entries are ignored)."""
    try:
        entries = list(os.scandir(model_dir))
    except FileNotFoundError:
        return []
    found = (VERSION_DIR_RE.fullmatch(e.name) for e in entries if e.is_dir(follow_symlinks=False))
    return sorted(int(m.group(1)) for m in found if m)


def version_files(folder: Path) -> list[str]:
    """Relative POSIX paths of every file under a version folder except the card and its
    signature (signing.py)."""
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()]
    return sorted(f for f in files if f not in (CARD_FILE, SIGNATURE_FILE))


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file, turning a missing or malformed file into a RegistryError."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{what} is not readable JSON ({path}): {exc}") from None


def check_file(folder: Path, relpath: str, expected: str) -> str | None:
    """A problem with one recorded file (missing, not a file, or SHA-256 mismatch), or None."""
    path = folder / relpath
    if path.is_symlink() or not path.is_file():
        return f"{relpath} is missing"
    actual = file_sha256(path)
    if actual != expected:
        return f"{relpath} was modified (SHA-256 {actual[:12]}..., card says {expected[:12]}...)"
    return None


def check_files(folder: Path, recorded: dict[str, str]) -> list[str]:
    """Every problem with a version folder's files against the card's SHA-256 table."""
    problems = [p for rel, sha in sorted(recorded.items()) if (p := check_file(folder, rel, sha))]
    extra = sorted(set(version_files(folder)) - set(recorded))
    problems += [f"{rel} is not listed in the card" for rel in extra]
    return problems


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_in(src: Path, folder: Path, relpath: str) -> str:
    """Copy `src` to `folder/relpath`, fsync it, make it read-only; returns its SHA-256."""
    dst = folder / relpath
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(src, dst)
    except FileNotFoundError:
        raise RegistryError(f"candidate file not found: {src}") from None
    with open(dst, "rb") as handle:
        os.fsync(handle.fileno())
    os.chmod(dst, 0o444)
    return file_sha256(dst)


@contextmanager
def locked(model_dir: Path) -> Iterator[None]:
    """Hold the model's write lock (released by the kernel if the process dies)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(model_dir / LOCK_FILE, timeout=LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout:
        raise RegistryError(
            f"registry {model_dir} is busy: lock {model_dir / LOCK_FILE} held for over "
            f"{LOCK_TIMEOUT_S:.0f} s by another process"
        ) from None
    try:
        yield
    finally:
        lock.release()


def remove_stale(model_dir: Path) -> list[str]:
    """Delete temp folders and atomic-write leftovers of crashed writers (call with the lock)."""
    removed = []
    for entry in sorted(model_dir.iterdir()):
        stale_tmp = entry.name.startswith(TMP_PREFIX) and entry.is_dir()
        stale_alias = entry.name.startswith(f".{ALIASES_FILE}.") and entry.is_file()
        if stale_tmp:
            shutil.rmtree(entry, ignore_errors=True)
        elif stale_alias:
            entry.unlink(missing_ok=True)
        if stale_tmp or stale_alias:
            removed.append(entry.name)
    return removed


@contextmanager
def staging_folder(model_dir: Path) -> Iterator[Path]:
    """A fresh `.tmp-<uuid>` folder in the model folder; removed unless committed."""
    folder = model_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    folder.mkdir()
    try:
        yield folder
    finally:
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)


def commit(folder: Path, model_dir: Path, version: int) -> Path:
    """Durably rename a complete temp folder to `v<version>` (the commit point)."""
    target = model_dir / version_dir_name(version)
    if target.exists():
        raise RegistryError(f"version folder {target} already exists; refusing to overwrite it")
    for sub in [p for p in folder.rglob("*") if p.is_dir()] + [folder]:
        _fsync_dir(sub)
    os.rename(folder, target)
    _fsync_dir(model_dir)
    return target
