"""Who may send /feedback: named bearer tokens, and a request rate per token.

Tokens come from a file (`serve.feedback_tokens_file`) that holds no secret, only each token's
SHA-256, one credential a line (`#` comments and blank lines ignored):

    alice  9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    kiosk  2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae  2027-01-31T00:00:00Z

(the optional third field is when the token stops working, UTC), and/or from the environment
variable MNIST_FEEDBACK_TOKENS, `name:token` pairs separated by commas or spaces, the tokens in
clear (at least 16 characters), hashed as they are read. A presented token is hashed and
compared with every known hash with `hmac.compare_digest`. The file is read on every check and
parsed again when its content changes (by SHA-256, not its time stamp, which `cp -p` keeps), so
removing a line revokes that token without a restart. Error messages name the file, the line
and the field, never a field's value: a token pasted in clear by mistake is not echoed.

The rate limit is a token bucket per credential name, in process memory: with `--workers N`
each worker process has its own buckets, so a client may get up to N times the rate.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mnist_pipeline.core.errors import DataError
from mnist_pipeline.core.regular_file import NOT_REGULAR, FileTooLarge, NotRegularFile, read_regular

ENV_TOKENS = "MNIST_FEEDBACK_TOKENS"
MIN_TOKEN_LENGTH = 16
MAX_FILE_BYTES = 1_000_000  # some 10,000 credentials; read on every check
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Unauthorized(Exception):
    """No credential, or one that is not (or no longer) valid: the message says which."""


@dataclass(frozen=True)
class Credential:
    """A named token, known by its SHA-256; `expires` None: it does not expire."""

    name: str
    sha256: str
    expires: datetime | None = None


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _expiry(text: str, where: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"{where}: field 3 (expiry) is not an ISO 8601 date or time") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _named(name: str, where: str, seen: set[str]) -> str:
    if not _NAME.match(name):  # not echoed: it may be a token pasted in the wrong place
        raise DataError(f"{where}: the credential name must be 1-64 of A-Z a-z 0-9 . _ @ -")
    if name in seen:
        raise DataError(f"{where}: credential name {name!r} appears twice")
    seen.add(name)
    return name


def parse_file(text: str, origin: str) -> list[Credential]:
    """Credentials of a tokens file's `text` (errors name `origin` and the line)."""
    found: list[Credential] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"{origin}:{number}"
        if len(fields) not in (2, 3):
            raise DataError(f"{where}: expected `name sha256-of-token [expiry]`")
        digest = fields[1].lower()
        if not _SHA256.match(digest):
            raise DataError(f"{where}: field 2 is not a SHA-256 (64 hex digits)")
        expires = _expiry(fields[2], where) if len(fields) == 3 else None
        found.append(Credential(_named(fields[0], where, seen), digest, expires))
    return found


def parse_env(value: str) -> list[Credential]:
    """Credentials of MNIST_FEEDBACK_TOKENS (`name:token` pairs; the tokens are hashed here)."""
    found: list[Credential] = []
    seen: set[str] = set()
    for number, pair in enumerate(value.replace(",", " ").split(), 1):
        name, sep, token = pair.partition(":")
        where = f"{ENV_TOKENS} entry {number}"
        if not sep or len(token) < MIN_TOKEN_LENGTH:  # `name` may be the token: not echoed
            raise DataError(
                f"{where}: entries are `name:token` with tokens of {MIN_TOKEN_LENGTH}+ characters"
            )
        try:
            digest = token_sha256(token)
        except UnicodeEncodeError:  # bytes that are not UTF-8 (os.environ's surrogateescape)
            raise DataError(f"{where}: the token is not UTF-8 text") from None
        found.append(Credential(_named(name, where, seen), digest))
    return found


class Credentials:
    """The credentials of a tokens file (re-read when it changes) and of the environment."""

    def __init__(self, file: Path | None, env_value: str | None) -> None:
        self.file = file
        self._env = parse_env(env_value) if env_value else []
        self._lock = threading.Lock()
        self._digest: str | None = None  # SHA-256 of the file's content last parsed
        self._from_file: list[Credential] = []
        self._current()  # a missing or malformed file is an error now, at startup

    @classmethod
    def from_settings(
        cls, configured: str | None, project: Path, environ: Mapping[str, str]
    ) -> Credentials | None:
        """Credentials from `serve.feedback_tokens_file` (relative to `project`) and the
        environment; None when neither is set (then there is no /feedback)."""
        env_value = environ.get(ENV_TOKENS, "").strip() or None
        if configured is None and env_value is None:
            return None
        path = None if configured is None else Path(configured)
        if path is not None and not path.is_absolute():
            path = project / path
        return cls(path, env_value)

    def _read(self, file: Path) -> bytes:
        """The file's bytes; DataError unless it is a regular file of at most MAX_FILE_BYTES.
        Opened without waiting, so a pipe put in its place is refused instead of waiting for a
        writer (with every /feedback request behind it)."""
        what = f"feedback tokens file {file}"
        try:
            return read_regular(file, MAX_FILE_BYTES)
        except FileNotFoundError:
            raise DataError(f"{what} does not exist") from None
        except IsADirectoryError:
            raise DataError(f"{what} is a folder, not a file") from None
        except NotRegularFile:
            raise DataError(f"{what} is {NOT_REGULAR}") from None
        except FileTooLarge:
            raise DataError(f"{what} is over {MAX_FILE_BYTES:,} bytes: not a tokens file") from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise DataError(f"{what} is not readable: {reason}") from None

    def _current(self) -> list[Credential]:
        if self.file is None:
            return self._env
        raw = self._read(self.file)
        digest = hashlib.sha256(raw).hexdigest()
        with self._lock:
            if digest != self._digest:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise DataError(f"feedback tokens file {self.file} is not UTF-8 text") from None
                self._from_file = parse_file(text, str(self.file))
                self._digest = digest
            return self._from_file + self._env

    def check(self, authorization: str | None, now: datetime | None = None) -> Credential:
        """The credential an `Authorization: Bearer <token>` header names; Unauthorized if
        the header is missing or malformed, or the token unknown or expired."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        if not authorization:
            raise Unauthorized("feedback needs a token: send `Authorization: Bearer <token>`")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be `Bearer <token>`")
        presented = token_sha256(token.strip()).encode()
        match = None
        for credential in self._current():  # every hash is compared: no early exit
            if hmac.compare_digest(presented, credential.sha256.encode()):
                match = credential
        if match is None:
            raise Unauthorized("the token is not a known feedback credential")
        if match.expires is not None and (now or datetime.now(UTC)) >= match.expires:
            raise Unauthorized(f"the token {match.name!r} expired at {match.expires.isoformat()}")
        return match


class RateLimiter:
    """A token bucket per name: `per_minute` requests a minute, bursts of as many (at least
    one); `clock` is monotonic seconds (injectable for tests)."""

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, name: str) -> int | None:
        """Spend one request of `name`'s bucket: None if allowed, else whole seconds to wait."""
        with self._lock:
            now = self.clock()
            level, then = self._buckets.get(name, (self.capacity, now))
            level = min(self.capacity, level + (now - then) * self.rate)
            if level < 1.0:
                self._buckets[name] = (level, now)
                return max(1, math.ceil((1.0 - level) / self.rate))
            self._buckets[name] = (level - 1.0, now)
            return None
