"""Feedback credentials: the tokens file and variable, the bearer check, the rate limit."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mnist_pipeline.core.errors import DataError
from mnist_pipeline.serving import tokens
from mnist_pipeline.serving.tokens import Credentials, RateLimiter, Unauthorized, token_sha256

ALICE, KIOSK = "alice-secret-token-0001", "kiosk-secret-token-0002"


def tokens_file(path: Path, *lines: str) -> Path:
    path.write_text("# name sha256 [expiry]\n\n" + "\n".join(lines) + "\n")
    return path


def test_the_file_holds_hashes_and_the_check_finds_the_name(tmp_path: Path) -> None:
    file = tokens_file(
        tmp_path / "tokens",
        f"alice {token_sha256(ALICE)}  # the reviewer's phone",
        f"kiosk {token_sha256(KIOSK).upper()} 2030-01-01T00:00:00Z",
    )
    assert ALICE not in file.read_text()
    creds = Credentials(file, None)
    assert creds.check(f"Bearer {ALICE}").name == "alice"
    kiosk = creds.check(f"bearer  {KIOSK} ")
    assert kiosk.name == "kiosk" and kiosk.expires == datetime(2030, 1, 1, tzinfo=UTC)
    with pytest.raises(Unauthorized, match="expired"):
        creds.check(f"Bearer {KIOSK}", now=datetime(2030, 1, 1, tzinfo=UTC))
    zoneless = Credentials(  # an expiry without a time zone is UTC
        tokens_file(tmp_path / "zoneless", f"kiosk {token_sha256(KIOSK)} 2030-01-01T00:00:00"),
        None,
    )
    assert zoneless.check(f"Bearer {KIOSK}", now=datetime(2029, 12, 31, 23, tzinfo=UTC)).name
    with pytest.raises(Unauthorized, match="expired"):
        zoneless.check(f"Bearer {KIOSK}", now=datetime(2030, 1, 1, tzinfo=UTC))
    for header, message in (
        (None, "needs a token"),
        ("", "needs a token"),
        (f"Basic {ALICE}", "must be `Bearer <token>`"),
        ("Bearer", "must be `Bearer <token>`"),
        ("Bearer not-a-known-token", "not a known feedback credential"),
        (f"Bearer {token_sha256(ALICE)}", "not a known"),  # the hash itself is no credential
    ):
        with pytest.raises(Unauthorized, match=message):
            creds.check(header)


def test_a_line_made_with_sha256sum_as_the_docs_say_is_accepted(tmp_path: Path) -> None:
    """docs/serving.md: `printf %s "$token" | sha256sum` makes the hash a tokens line holds."""
    made = subprocess.run(
        ["sha256sum"], input=ALICE.encode(), capture_output=True, check=True
    ).stdout.decode()
    digest = made.split()[0]
    assert token_sha256("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 example
    )
    creds = Credentials(tokens_file(tmp_path / "tokens", f"alice {digest}"), None)
    assert creds.check(f"Bearer {ALICE}").name == "alice"


def test_the_file_is_read_again_when_it_changes_revoking_a_token(tmp_path: Path) -> None:
    file = tokens_file(tmp_path / "tokens", f"alice {token_sha256(ALICE)}")
    creds = Credentials(file, None)
    assert creds.check(f"Bearer {ALICE}").name == "alice"
    tokens_file(file, f"kiosk {token_sha256(KIOSK)}")
    os.utime(file, ns=(1, 1))  # a different stamp even on a coarse-clock filesystem
    with pytest.raises(Unauthorized, match="not a known"):
        creds.check(f"Bearer {ALICE}")
    assert creds.check(f"Bearer {KIOSK}").name == "kiosk"


def test_a_hash_replaced_by_one_of_the_same_size_and_time_stamp_is_seen(tmp_path: Path) -> None:
    """`cp -p` or `rsync -t` keep the time stamp, and one hash for another keeps the size."""
    file = tokens_file(tmp_path / "tokens", f"alice {token_sha256(ALICE)}")
    before = file.stat()
    creds = Credentials(file, None)
    assert creds.check(f"Bearer {ALICE}").name == "alice"
    tokens_file(file, f"alice {token_sha256(KIOSK)}")  # alice's token revoked, a new one given
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert file.stat().st_size == before.st_size
    with pytest.raises(Unauthorized, match="not a known"):
        creds.check(f"Bearer {ALICE}")
    assert creds.check(f"Bearer {KIOSK}").name == "alice"


def test_an_unreadable_tokens_file_is_one_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tokens_file(tmp_path / "tokens", f"alice {token_sha256(ALICE)}")
    creds = Credentials(file, None)
    file.write_bytes(b"alice \xff\xfe\n")
    with pytest.raises(DataError, match=r"tokens file .*tokens is not UTF-8 text$"):
        creds.check(f"Bearer {ALICE}")
    file.unlink()
    file.mkdir()
    with pytest.raises(DataError, match=r"tokens file .*tokens is a folder, not a file$"):
        creds.check(f"Bearer {ALICE}")
    file.rmdir()
    file.write_bytes(b"# " + b"x" * tokens.MAX_FILE_BYTES + b"\n")
    with pytest.raises(DataError, match=r"tokens file .*tokens is over 1,000,000 bytes"):
        creds.check(f"Bearer {ALICE}")
    file.write_text(f"alice {token_sha256(ALICE)}\n")
    file.chmod(0)
    if os.geteuid() == 0:  # root reads it anyway: the refusal a user would get, made by hand

        def refused(path: Path, limit: int) -> bytes:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

        monkeypatch.setattr(tokens, "read_regular", refused)
    with pytest.raises(DataError, match=r"tokens file .*tokens is not readable: Permission de"):
        creds.check(f"Bearer {ALICE}")


def test_a_pipe_in_place_of_the_tokens_file_is_refused_without_waiting_for_a_writer(
    tmp_path: Path,
) -> None:
    """Opening a pipe waits for a writer: every /feedback request would hang behind it."""
    file = tokens_file(tmp_path / "tokens", f"alice {token_sha256(ALICE)}")
    creds = Credentials(file, None)
    file.unlink()
    os.mkfifo(file)
    outcome: list[BaseException | None] = []

    def check() -> None:
        try:
            creds.check(f"Bearer {ALICE}")
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome.append(exc)

    checking = threading.Thread(target=check, daemon=True)
    checking.start()
    checking.join(10)
    if checking.is_alive():  # waiting for a writer: give it one so the thread ends
        os.close(os.open(file, os.O_WRONLY | os.O_NONBLOCK))
        checking.join(10)
        pytest.fail("the check waited on the pipe for a writer")
    assert len(outcome) == 1 and isinstance(outcome[0], DataError), outcome
    assert str(outcome[0]) == (
        f"feedback tokens file {file} is not a regular file (a device, pipe or socket)"
    )
    with pytest.raises(DataError, match="not a regular file"):  # refused at startup too
        Credentials(file, None)


def test_the_environment_variable_gives_tokens_in_clear_hashed_on_reading() -> None:
    creds = Credentials(None, f"alice:{ALICE}, kiosk:{KIOSK}")
    assert creds.check(f"Bearer {KIOSK}").name == "kiosk"
    with pytest.raises(DataError, match="16\\+ characters"):
        Credentials(None, "alice:short")
    with pytest.raises(DataError, match="`name:token`") as refused:
        Credentials(None, f"kiosk:{KIOSK} {ALICE}")  # a token without its name
    assert "entry 2" in str(refused.value) and ALICE not in str(refused.value)
    # bytes that are not UTF-8 reach Python as lone surrogates (os.environ's surrogateescape)
    with pytest.raises(DataError, match=r"entry 2: the token is not UTF-8 text$"):
        Credentials(None, f"alice:{ALICE} kiosk:{KIOSK[:4]}\udcff{KIOSK[4:]}")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice", r"tokens:3: expected `name sha256-of-token \[expiry\]`"),
        ("alice abc123", "tokens:3: field 2 is not a SHA-256"),
        (f"alice {ALICE}", "tokens:3: field 2 is not a SHA-256"),  # the token, not its hash
        (f"al/ice {'0' * 64}", "tokens:3: the credential name must be 1-64 of"),
        (f"alice {'0' * 64} tomorrow", "field 3 \\(expiry\\) is not an ISO 8601"),
        (f"alice {'0' * 64}\nalice {'1' * 64}", "tokens:4: credential name 'alice' appears twice"),
    ],
)
def test_a_bad_tokens_file_is_refused_naming_the_line(
    tmp_path: Path, line: str, message: str
) -> None:
    with pytest.raises(DataError, match=message) as refused:
        Credentials(tokens_file(tmp_path / "tokens", line), None)
    for value in ("abc123", ALICE, "al/ice", "tomorrow"):  # no field's value is echoed
        assert value not in str(refused.value)


def test_no_settings_means_no_credentials_and_a_missing_file_is_an_error(tmp_path: Path) -> None:
    assert Credentials.from_settings(None, tmp_path, {}) is None
    assert Credentials.from_settings(None, tmp_path, {tokens.ENV_TOKENS: " "}) is None
    with pytest.raises(DataError, match="feedback tokens file .*tokens does not exist"):
        Credentials.from_settings("tokens", tmp_path, {})
    tokens_file(tmp_path / "tokens", f"alice {token_sha256(ALICE)}")
    found = Credentials.from_settings("tokens", tmp_path, {tokens.ENV_TOKENS: f"kiosk:{KIOSK}"})
    assert found is not None and found.file == tmp_path / "tokens"
    assert {found.check(f"Bearer {t}").name for t in (ALICE, KIOSK)} == {"alice", "kiosk"}


def test_the_rate_limit_is_a_bucket_per_name() -> None:
    now = [100.0]
    limiter = RateLimiter(2, clock=lambda: now[0])  # 2 a minute: one more every 30 s
    assert limiter.take("alice") is None and limiter.take("alice") is None
    assert limiter.take("alice") == 30
    assert limiter.take("kiosk") is None  # another credential has its own bucket
    now[0] += 15
    assert limiter.take("alice") == 15
    now[0] += 15
    assert limiter.take("alice") is None
    assert limiter.take("alice") == 30
