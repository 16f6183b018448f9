"""Fetch stage: download the four MNIST files from ordered mirrors, verify, place atomically.

The only module that touches the network. Each file is streamed to a temporary file beside
its target, decompressed, checked against the SHA-256 of its decompressed content and parsed
strictly as IDX; only then is it renamed into place. A failing mirror falls through to the next.
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from mnist_pipeline.core import atomic
from mnist_pipeline.core.errors import DataError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import DataParams
from mnist_pipeline.core.regular_file import NOT_REGULAR, NotRegularFile, open_regular
from mnist_pipeline.core.text import printable
from mnist_pipeline.data import idx
from mnist_pipeline.data.manifest import FILE_KINDS, MNIST_FILES, file_sha256

CHUNK = 1 << 20


class MirrorError(Exception):
    """One mirror could not deliver one file (the reason is the message); `transient` when
    asking again may succeed (the network or the server failed, not the file or the path)."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class FetchError(DataError):
    """No mirror delivered a file; `transient` when some mirror failed in a way that asking
    again may mend (the retraining flow retries only those)."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class FetchResult:
    """What `fetch` did: files downloaded (with their mirror) and files already present."""

    data_dir: Path
    downloaded: dict[str, str] = field(default_factory=dict)
    already_present: tuple[str, ...] = ()

    def summary(self) -> str:
        lines = [f"fetched {name} from {printable(m)}" for name, m in self.downloaded.items()]
        if self.already_present:
            lines.append(f"already present and verified: {len(self.already_present)} file(s)")
        return "\n".join([*lines, f"dataset ready in {printable(str(self.data_dir))}"])


def _source(mirror: str, filename: str) -> str:
    """Join a mirror (https://, http://, file:// or a directory path) and a file name."""
    if "://" in mirror:
        return mirror.rstrip("/") + "/" + urllib.parse.quote(filename)
    try:
        return str(Path(mirror).expanduser() / filename)
    except RuntimeError as exc:  # "~someone/..." for a user that does not exist
        raise MirrorError(f"not a usable folder: {exc}") from None


def _local_path(source: str) -> str | None:
    """The file a folder mirror's or a local file:// URL's source names (None: a network URL)."""
    if "://" not in source:
        return source
    try:
        parsed = urllib.parse.urlsplit(source)
    except ValueError:  # "http://[::1": urlopen names it
        return None
    if parsed.scheme.lower() == "file" and parsed.netloc in ("", "localhost"):
        return urllib.request.url2pathname(parsed.path)
    return None


def _open(source: str, timeout: float) -> tuple[BinaryIO, int | None]:
    """Open a source for reading; returns the stream and its length when known. A local file
    must be a regular one: a pipe would block the fetch (and its lock) until a writer came."""
    local = _local_path(source)
    if local is not None:
        try:
            handle, found = open_regular(local)
        except FileNotFoundError:
            raise MirrorError("not found") from None
        except IsADirectoryError:
            raise MirrorError("a folder, not a file") from None
        except NotRegularFile:
            raise MirrorError(NOT_REGULAR) from None
        except OSError as exc:
            raise MirrorError(f"cannot read: {exc.strerror or exc}") from None
        except ValueError as exc:  # "embedded null byte": a NUL in the path (%00 in a URL)
            raise MirrorError(f"not a usable path: {exc}") from None
        return handle, found.st_size
    try:
        response = urllib.request.urlopen(source, timeout=timeout)  # noqa: S310 - mirrors only
    except (ValueError, http.client.InvalidURL) as exc:  # "http://[::1", "https://exa mple.com/"
        raise MirrorError(f"not a valid URL: {exc}") from None
    except urllib.error.HTTPError as exc:
        busy = exc.code >= 500 or exc.code in (408, 429)  # the server's, not the file's
        raise MirrorError(f"HTTP {exc.code} {exc.reason}", busy) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, FileNotFoundError):
            raise MirrorError("not found") from None
        raise MirrorError(f"unreachable: {reason}", transient=True) from None
    except (TimeoutError, OSError) as exc:
        raise MirrorError(f"unreachable: {exc}", transient=True) from None
    except http.client.HTTPException as exc:  # not HTTP at all (BadStatusLine, LineTooLong)
        why = f"not an HTTP answer: {type(exc).__name__}: {exc}"
        raise MirrorError(why, transient=True) from None
    length = response.headers.get("Content-Length")
    return response, int(length) if length and length.isascii() and length.isdigit() else None


def _download(source: str, out: BinaryIO, timeout: float, progress: Progress | None) -> None:
    stream, length = _open(source, timeout)
    if length is not None and length > idx.MAX_FILE_BYTES:
        stream.close()
        raise MirrorError(f"{length:,} bytes is more than the {idx.MAX_FILE_BYTES:,} allowed")
    task = progress.add_task(Path(source).name, total=length) if progress else None
    received = 0
    try:
        with stream:
            while chunk := _read(stream, received):
                out.write(chunk)  # a local error (a full disk) is no mirror's fault: it propagates
                received += len(chunk)
                if received > idx.MAX_FILE_BYTES:
                    raise MirrorError(f"more than the {idx.MAX_FILE_BYTES:,} bytes allowed")
                if progress is not None and task is not None:
                    progress.update(task, advance=len(chunk))
    finally:
        if progress is not None and task is not None:
            progress.remove_task(task)
    if length is not None and received != length:
        raise MirrorError(f"truncated download: {received} of {length} bytes", transient=True)


IDX_UBYTE = bytes((0, 0, idx.UBYTE))  # how an IDX file of unsigned bytes starts


def _read(stream: BinaryIO, received: int) -> bytes:
    """The next chunk of a download; MirrorError when the connection fails mid-way."""
    try:
        return stream.read(CHUNK)
    except (TimeoutError, OSError, http.client.HTTPException) as exc:  # IncompleteRead, too
        why = f"{type(exc).__name__}: {exc}" if isinstance(exc, http.client.HTTPException) else exc
        raise MirrorError(f"download interrupted after {received} bytes: {why}", True) from None


def _fetch_one(
    name: str, expected: str, mirror: str, folder: Path, timeout: float, progress: Progress | None
) -> bytes:
    """The verified, decompressed content of `name` from one mirror (downloaded through a temp
    file in `folder`), or MirrorError saying why not."""
    errors = []
    for filename in (name + ".gz", name):
        try:
            with tempfile.TemporaryFile(dir=folder) as raw:
                _download(_source(mirror, filename), raw, timeout, progress)
                raw.seek(0)
                data = raw.read()
        except MirrorError as exc:
            errors.append(f"{filename}: {exc}")
            if str(exc) == "not found" or str(exc).startswith("HTTP 404"):
                continue
            raise MirrorError("; ".join(errors), exc.transient) from None
        except OSError as exc:  # local (a full disk): the temp file is unnamed, so name the target
            raise OSError(exc.errno, exc.strerror, str(folder / name)) from None
        try:
            content = idx.maybe_gunzip(data, filename)
            digest = hashlib.sha256(content).hexdigest()
            if digest != expected and filename != name and not data.startswith(idx.GZIP_MAGIC):
                # a server answering an error page with 200: try the uncompressed name
                errors.append(f"{filename}: not gzip data (starts with {data[:24]!r})")
                continue
            if digest != expected:
                odd = "" if content[:3] == IDX_UBYTE else f"; not IDX: starts with {content[:24]!r}"
                errors.append(
                    f"{filename}: sha256 mismatch of decompressed content "
                    f"(got {digest[:12]}…, expected {expected[:12]}…{odd})"
                )
                raise MirrorError("; ".join(errors))
            if FILE_KINDS[name] == "images":
                idx.parse_images(content, filename)
            else:
                idx.parse_labels(content, filename)
        except DataError as exc:
            raise MirrorError(str(exc)) from None
        return content
    raise MirrorError("; ".join(errors))


def _is_verified(path: Path, expected: str) -> bool:
    return path.is_file() and file_sha256(path) == expected


def _progress(show: bool | None) -> Progress | None:
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return None
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=True,
    )


def fetch(params: DataParams, layout: Layout, show_progress: bool | None = None) -> FetchResult:
    """Make layout.data_dir hold the four verified MNIST files, downloading only what is missing.

    Concurrent fetches into one folder (overlapping flow runs) take turns under a file lock
    beside it: the second finds the files verified and downloads nothing.
    """
    data_dir = layout.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    with atomic.folder_lock(data_dir):
        return _fetch_locked(params, data_dir, show_progress)


def _fetch_locked(params: DataParams, data_dir: Path, show_progress: bool | None) -> FetchResult:
    """Every missing or changed file downloaded and verified first, then all written together:
    a fetch that fails part-way replaces none (never new images beside old labels)."""
    downloaded: dict[str, str] = {}
    contents: dict[Path, bytes] = {}
    present: list[str] = []
    progress = _progress(show_progress)
    with progress if progress is not None else nullcontext():
        for spec in MNIST_FILES:
            target = data_dir / spec.name
            expected = params.sha256[spec.name]
            if _is_verified(target, expected):
                present.append(spec.name)
                continue
            if not downloaded:  # a download goes through a temp file there: name the folder
                atomic.check_writable(data_dir)
            failures, transient = [], False
            for mirror in params.mirrors:
                try:
                    content = _fetch_one(
                        spec.name, expected, mirror, data_dir, params.timeout_s, progress
                    )
                except MirrorError as exc:
                    failures.append(f"  {mirror}: {exc}")
                    transient = transient or exc.transient
                    continue
                downloaded[spec.name], contents[target] = mirror, content
                break
            else:
                raise FetchError(
                    f"could not fetch {spec.name} from any mirror:\n" + "\n".join(failures),
                    transient,
                )
    atomic.write_many(contents)
    _cleanup_stray_temps(data_dir)
    return FetchResult(data_dir=data_dir, downloaded=downloaded, already_present=tuple(present))


def _cleanup_stray_temps(data_dir: Path) -> None:
    """Remove temp files a killed earlier run may have left (never the verified files)."""
    for stray in data_dir.glob(".*.tmp*"):
        if stray.is_dir():
            shutil.rmtree(stray, ignore_errors=True)
        else:
            stray.unlink(missing_ok=True)
