from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import os
import shlex
import socket
import socketserver
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from mnist_pipeline.core.errors import DataError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import DataParams
from mnist_pipeline.data import idx
from mnist_pipeline.data.dataset import load_mnist
from mnist_pipeline.data.fetch import fetch
from mnist_pipeline.data.manifest import DEFAULT_SHA256, file_sha256
from tests.conftest import REPO_ROOT
from tests.synthetic import idx_bytes, make_dataset, write_mirror

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"


def data_params(sha: dict[str, str], *mirrors: str | Path) -> DataParams:
    return DataParams(mirrors=tuple(str(m) for m in mirrors), sha256=sha, timeout_s=5)


def test_fetch_from_gzipped_directory_mirror(tmp_path: Path, tiny_mirror, tiny_files) -> None:
    mirror, sha = tiny_mirror
    stray = Layout(tmp_path).data_dir / f".{TRAIN_IMAGES}.k13lh8e5.tmp"  # a killed fetch's
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"half")
    result = fetch(data_params(sha, mirror), Layout(tmp_path), show_progress=False)
    assert set(result.downloaded) == set(tiny_files)
    for name, content in tiny_files.items():
        assert (Layout(tmp_path).data_dir / name).read_bytes() == content
    assert not [p for p in (Layout(tmp_path).data_dir).iterdir() if p.name.startswith(".")]
    mnist = load_mnist(Layout(tmp_path).data_dir)
    assert mnist.train_images.shape == (256, 28, 28) and mnist.test_labels.shape == (128,)


def test_fetch_from_plain_files_and_file_url(tmp_path: Path, tiny_files) -> None:
    sha = write_mirror(tmp_path / "plain", tiny_files, gz=False)
    fetch(data_params(sha, (tmp_path / "plain").as_uri()), Layout(tmp_path), show_progress=False)
    assert file_sha256(Layout(tmp_path).data_dir / TRAIN_IMAGES) == sha[TRAIN_IMAGES]


@pytest.mark.parametrize("as_url", [False, True], ids=["folder", "file-url"])
def test_a_pipe_in_a_local_mirror_is_refused_not_waited_on(
    tmp_path: Path, tiny_files, as_url: bool
) -> None:
    """A pipe where a mirror's file belongs would block the fetch, and the dataset's lock,
    until some writer came: it is refused like a missing file and the next mirror serves."""
    sha = write_mirror(tmp_path / "good", tiny_files)
    pipes = tmp_path / "pipes"
    pipes.mkdir()
    for name in tiny_files:
        for file in (pipes / f"{name}.gz", pipes / name):
            os.mkfifo(file)
    mirror = pipes.as_uri() if as_url else str(pipes)
    outcome: list[object] = []
    worker = threading.Thread(
        target=lambda: outcome.append(
            fetch(data_params(sha, mirror, tmp_path / "good"), Layout(tmp_path), False)
        ),
        daemon=True,
    )
    worker.start()
    worker.join(60)
    if worker.is_alive():  # release the blocked reader so that the test can end
        for file in pipes.iterdir():
            with contextlib.suppress(OSError):  # ENXIO: no reader waits on this one
                os.close(os.open(file, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("the fetch waited on a pipe in the mirror")
    (result,) = outcome
    assert result.downloaded == {name: str(tmp_path / "good") for name in tiny_files}
    with pytest.raises(DataError, match=r"not a regular file \(a device, pipe or socket\)"):
        fetch(data_params(sha, mirror), Layout(tmp_path / "alone"), show_progress=False)


def test_present_verified_data_is_not_downloaded_again(tmp_path: Path, tiny_mirror) -> None:
    mirror, sha = tiny_mirror
    fetch(data_params(sha, mirror), Layout(tmp_path), show_progress=False)
    for gz in mirror.iterdir():
        gz.unlink()  # the mirror is gone: a second fetch must not need it
    again = fetch(data_params(sha, mirror), Layout(tmp_path), show_progress=False)
    assert again.downloaded == {} and len(again.already_present) == 4


def test_falls_through_to_the_next_mirror_for_each_file(tmp_path: Path, tiny_files) -> None:
    sha = write_mirror(tmp_path / "good", tiny_files)
    bad = tmp_path / "bad"
    other = make_dataset(seed=99)
    write_mirror(bad, other)  # valid IDX, wrong content
    missing = tmp_path / "missing"
    layout = Layout(tmp_path / "d")
    result = fetch(data_params(sha, missing, bad, tmp_path / "good"), layout, False)
    assert result.downloaded == {name: str(tmp_path / "good") for name in tiny_files}
    for name, data in tiny_files.items():
        assert (layout.data_dir / name).read_bytes() == data


def test_all_mirrors_failing_lists_each_mirror_and_why(tmp_path: Path, tiny_files) -> None:
    sha = {name: "0" * 64 for name in tiny_files}
    write_mirror(tmp_path / "wrong", tiny_files)
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    packed = gzip.compress(tiny_files[TRAIN_IMAGES])
    (truncated / f"{TRAIN_IMAGES}.gz").write_bytes(packed[: len(packed) // 2])
    params = data_params(sha, tmp_path / "nowhere", tmp_path / "wrong", truncated)
    with pytest.raises(DataError) as info:
        fetch(params, Layout(tmp_path), show_progress=False)
    message = str(info.value)
    assert "nowhere" in message and "not found" in message
    assert "sha256 mismatch" in message
    assert "corrupt or truncated gzip" in message
    assert not (Layout(tmp_path).data_dir / TRAIN_IMAGES).exists()
    assert list((Layout(tmp_path).data_dir).iterdir()) == []
    assert info.value.transient is False  # every mirror answered: asking again would not help
    with socket.socket() as closed:  # a port nothing listens on: the network's failure
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    # unreachable first, then one that answered: any mirror the network failed makes it so
    params = data_params(sha, f"http://127.0.0.1:{port}/", tmp_path / "nowhere")
    with pytest.raises(DataError) as info:
        fetch(params, Layout(tmp_path), show_progress=False)
    assert "unreachable" in str(info.value) and info.value.transient is True


def test_a_mirror_answering_a_web_page_for_the_gz_name_is_told_and_tried_uncompressed(
    tmp_path: Path, tiny_files
) -> None:
    """A server answering 200 with an HTML page for NAME.gz: said so (not a "sha256 mismatch of
    decompressed content"), and NAME is tried next on the same mirror."""
    sha = write_mirror(tmp_path / "mirror", tiny_files)
    page = b"<!doctype html><html><body>Not here</body></html>"
    (tmp_path / "mirror" / f"{TRAIN_IMAGES}.gz").write_bytes(page)
    (tmp_path / "mirror" / TRAIN_IMAGES).write_bytes(tiny_files[TRAIN_IMAGES])
    params = data_params(sha, tmp_path / "mirror")
    assert fetch(params, Layout(tmp_path / "a"), False).downloaded
    assert (Layout(tmp_path / "a").data_dir / TRAIN_IMAGES).read_bytes() == tiny_files[TRAIN_IMAGES]
    (tmp_path / "mirror" / TRAIN_IMAGES).unlink()
    with pytest.raises(DataError) as info:
        fetch(params, Layout(tmp_path / "b"), show_progress=False)
    message = str(info.value)
    assert f"{TRAIN_IMAGES}.gz: not gzip data (starts with b'<!doctype html><html><bo')" in message
    assert f"{TRAIN_IMAGES}: not found" in message and "sha256 mismatch" not in message

    # the page under both names (a captive portal, a site answering every path): both said
    (tmp_path / "mirror" / TRAIN_IMAGES).write_bytes(page)
    with pytest.raises(DataError) as info:
        fetch(params, Layout(tmp_path / "c"), show_progress=False)
    message = str(info.value)
    assert f"{TRAIN_IMAGES}.gz: not gzip data (starts with b'<!doctype html><html><bo')" in message
    assert f"{TRAIN_IMAGES}: sha256 mismatch" in message
    assert "not IDX: starts with b'<!doctype html><html><bo'" in message


def test_a_full_disk_while_downloading_is_one_os_error_not_a_bad_mirror(
    tmp_path: Path, tiny_files, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writing the download fails (ENOSPC): the OSError itself propagates (the CLI's one line,
    exit 74), naming no mirror, and no other mirror is tried."""
    import errno
    import tempfile

    sha = write_mirror(tmp_path / "m1", tiny_files)
    write_mirror(tmp_path / "m2", tiny_files)
    made = []
    real = tempfile.TemporaryFile

    class Full:
        def __init__(self, *args, **kwargs) -> None:
            self.file = real(*args, **kwargs)
            made.append(self)

        def __enter__(self) -> Full:
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("mnist_pipeline.data.fetch.tempfile.TemporaryFile", Full)
    params = data_params(sha, tmp_path / "m1", tmp_path / "m2")
    with pytest.raises(OSError, match="No space left on device") as info:
        fetch(params, Layout(tmp_path / "a"), show_progress=False)
    assert not isinstance(info.value, DataError) and len(made) == 1
    # the download's temp file has no name: the error names the file it was fetching
    assert Path(info.value.filename).parent == Layout(tmp_path / "a").data_dir


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (TRAIN_IMAGES, b"\x00\x00\x09\x03" + b"\x00" * 12, "wrong magic"),
        (
            TRAIN_IMAGES,
            idx_bytes(np.zeros((2, 28, 28), np.uint8))[:-5],
            "byte count",
        ),
        (TRAIN_LABELS, idx_bytes(np.array([1, 12], np.uint8)), "outside 0-9"),
    ],
)
def test_malformed_file_matching_its_checksum_is_still_rejected(
    tmp_path: Path, tiny_files, name: str, content: bytes, message: str
) -> None:
    files = dict(tiny_files, **{name: content})
    sha = write_mirror(tmp_path / "m", files)  # checksum "matches" the malformed file
    with pytest.raises(DataError, match=message):
        fetch(data_params(sha, tmp_path / "m"), Layout(tmp_path), show_progress=False)


def test_existing_good_data_is_not_overwritten_by_a_bad_mirror(tmp_path: Path, tiny_files) -> None:
    sha = write_mirror(tmp_path / "good", tiny_files)
    data = Layout(tmp_path).data_dir
    fetch(data_params(sha, tmp_path / "good"), Layout(tmp_path), show_progress=False)
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    (data / TRAIN_LABELS).unlink()  # one file missing: only it is fetched again
    write_mirror(tmp_path / "bad", make_dataset(seed=5))
    with pytest.raises(DataError, match=rf"(?s)could not fetch {TRAIN_LABELS} .*sha256 mismatch"):
        fetch(data_params(sha, tmp_path / "bad"), Layout(tmp_path), show_progress=False)
    after = {p.name: p.read_bytes() for p in data.iterdir()}
    assert after == {k: v for k, v in before.items() if k != TRAIN_LABELS}


def test_a_fetch_that_fails_part_way_replaces_none_of_the_files(tmp_path: Path, tiny_files) -> None:
    """data.sha256 changed to another dataset whose mirror holds only some of its files: the
    fetch fails, and the old dataset stays whole (never new images beside old labels)."""
    sha = write_mirror(tmp_path / "old", tiny_files)
    data = Layout(tmp_path).data_dir
    fetch(data_params(sha, tmp_path / "old"), Layout(tmp_path), show_progress=False)
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    other = make_dataset(seed=5)
    partial = tmp_path / "partial"
    other_sha = write_mirror(partial, other)
    (partial / f"{TRAIN_LABELS}.gz").unlink()  # the mirror lacks one file
    with pytest.raises(DataError, match=rf"could not fetch {TRAIN_LABELS}"):
        fetch(data_params(other_sha, partial), Layout(tmp_path), show_progress=False)
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before


@pytest.fixture
def http_mirror(tmp_path: Path, tiny_files) -> Iterator[tuple[str, dict[str, str]]]:
    root = tmp_path / "www"
    sha = write_mirror(root, tiny_files)
    with serving(root) as url:
        yield url, sha


@contextlib.contextmanager
def serving(root: Path) -> Iterator[str]:
    """An HTTP server of the files in `root` on 127.0.0.1 (its URL)."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_http_mirror_404_then_success(tmp_path: Path, http_mirror) -> None:
    url, sha = http_mirror
    params = data_params(sha, url + "missing/", url)
    result = fetch(params, Layout(tmp_path), show_progress=False)
    assert result.downloaded == {name: url for name in sha}


def test_an_http_mirror_without_gz_files_serves_the_uncompressed_ones(
    tmp_path: Path, tiny_files
) -> None:
    """A 404 for NAME.gz is followed by NAME on the same mirror, not by the next mirror."""
    sha = write_mirror(tmp_path / "www", tiny_files, gz=False)
    with serving(tmp_path / "www") as url:
        result = fetch(data_params(sha, url), Layout(tmp_path), show_progress=False)
    assert result.downloaded == {name: url for name in sha}
    assert file_sha256(Layout(tmp_path).data_dir / TRAIN_IMAGES) == sha[TRAIN_IMAGES]


@pytest.mark.e2e
def test_real_mnist_from_shared_folder(real_run: Layout) -> None:
    """The shared real-data run fetched ../shared/mnist, verified against the default SHA-256."""
    data = real_run.data_dir
    assert {f: file_sha256(data / f) for f in DEFAULT_SHA256} == DEFAULT_SHA256
    mnist = load_mnist(data)
    assert mnist.train_images.shape == (60000, 28, 28)
    assert mnist.test_images.shape == (10000, 28, 28)
    expected_train = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert mnist.train_labels.bincount().tolist() == expected_train
    expected_test = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert mnist.test_labels.bincount().tolist() == expected_test


def gzip_bomb(member_bytes: int, members: int) -> bytes:
    """`members` gzip members of `member_bytes` zeros each: ~1000x smaller than it expands."""
    zeros = bytes(16 << 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    member = b"".join(packer.compress(zeros) for _ in range(member_bytes // len(zeros)))
    return (member + packer.flush()) * members


def limit_inflation(monkeypatch: pytest.MonkeyPatch, budget: int) -> list[int]:
    """Count the bytes any zlib decompressor (gzip's too) produces; fail once past `budget`.

    Each call is capped at the room left, so a decompress-it-all reader trips the wire
    instead of allocating gigabytes. Returns a one-item list holding the count."""
    produced = [0]
    real = zlib.decompressobj

    def take(chunk: bytes) -> bytes:
        produced[0] += len(chunk)
        assert produced[0] <= budget, f"decompressed {produced[0]:,} bytes, over {budget:,}"
        return chunk

    class Counted:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self._inner = real(*args, **kwargs)

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            room = budget - produced[0] + 1
            return take(self._inner.decompress(data, min(max_length or room, room)))

        def flush(self, *args: int) -> bytes:
            return take(self._inner.flush(*args))

        def __getattr__(self, name: str) -> object:
            return getattr(self._inner, name)

    def one_shot(data: bytes, wbits: int = zlib.MAX_WBITS, bufsize: int = 0) -> bytes:
        return Counted(wbits=wbits).decompress(data)

    monkeypatch.setattr(zlib, "decompressobj", Counted)
    monkeypatch.setattr(zlib, "decompress", one_shot)
    return produced


def test_gzip_bomb_is_refused_before_it_expands(
    tmp_path: Path, tiny_files, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small .gz that expands to 16 GiB: refused at the cap, having inflated no more than
    the cap allows, nothing written."""
    sha = write_mirror(tmp_path / "m", tiny_files)
    bomb = gzip_bomb(128 << 20, members=128)  # 16 GiB of zeros
    assert len(bomb) < 20 << 20 < idx.MAX_FILE_BYTES  # the download itself is allowed
    (tmp_path / "m" / f"{TRAIN_IMAGES}.gz").write_bytes(bomb)
    produced = limit_inflation(monkeypatch, budget=idx.MAX_FILE_BYTES + 1)
    with pytest.raises(DataError, match=r"expands to more than 67,108,864 bytes") as info:
        fetch(data_params(sha, tmp_path / "m"), Layout(tmp_path), show_progress=False)
    assert "gzip bomb" in str(info.value)
    assert idx.MAX_FILE_BYTES < produced[0] <= idx.MAX_FILE_BYTES + 1
    assert not (Layout(tmp_path).data_dir / TRAIN_IMAGES).exists()


def test_oversized_download_is_refused(tmp_path: Path, tiny_files, monkeypatch) -> None:
    sha = write_mirror(tmp_path / "m", tiny_files)
    monkeypatch.setattr(idx, "MAX_FILE_BYTES", 1000)  # the tiny .gz files are bigger
    with pytest.raises(DataError, match="more than the 1,000 allowed"):
        fetch(data_params(sha, tmp_path / "m"), Layout(tmp_path), show_progress=False)


def test_a_download_of_no_stated_length_is_cut_at_the_limit(
    tmp_path: Path, tiny_files, monkeypatch, broken_http: dict[str, str]
) -> None:
    """Without Content-Length the size is known only while reading: refused once over it."""
    sha = write_mirror(tmp_path / "m", tiny_files)
    monkeypatch.setattr(idx, "MAX_FILE_BYTES", 1000)
    with pytest.raises(DataError, match="more than the 1,000 bytes allowed"):
        fetch(data_params(sha, broken_http["unsized"]), Layout(tmp_path), show_progress=False)
    assert not Layout(tmp_path).data_dir.exists() or not any(Layout(tmp_path).data_dir.iterdir())


def test_malformed_mirrors_fall_through_to_a_good_one(tmp_path: Path, tiny_files) -> None:
    """Params refuse an unparsable URL; fetch, given one anyway, tries the next mirror."""
    sha = write_mirror(tmp_path / "good", tiny_files)
    bad = ("http://[::1", "https://exa mple.com/", "~no-such-user-4711/mnist")
    with pytest.raises(ValidationError, match="'http://\\[::1' is not a valid URL"):
        data_params(sha, *bad)

    def unchecked(*mirrors: str | Path) -> DataParams:
        return DataParams.model_construct(mirrors=tuple(map(str, mirrors)), sha256=sha, timeout_s=5)

    result = fetch(unchecked(*bad, tmp_path / "good"), Layout(tmp_path), False)
    assert result.downloaded == {name: str(tmp_path / "good") for name in tiny_files}
    with pytest.raises(DataError) as info:
        fetch(unchecked(*bad), Layout(tmp_path / "other"), show_progress=False)
    message = str(info.value)
    for mirror in bad:
        assert f"  {mirror}: " in message
    assert message.count("not a valid URL") == 2 and "not a usable folder" in message


def test_the_cli_summary_is_never_wrapped_in_logs(tmp_path: Path, tiny_mirror) -> None:
    """Piped (as in `dvc repro` logs), long lines stay whole: no wrapping at 80 columns."""
    import subprocess
    import sys

    import yaml

    from tests.conftest import REPO_ROOT

    mirror, sha = tiny_mirror
    root = tmp_path / ("a-long-folder-name-" * 4) / "project"
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(
        yaml.safe_dump({"data": {"mirrors": [str(mirror)], "sha256": sha}})
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MNIST_MIRROR", "COLUMNS")}
    done = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline", "--root", str(root), "fetch"],
        env=env | {"PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    ready = f"dataset ready in {root / 'data' / 'mnist'}"
    assert ready in lines and len(ready) > 120, lines
    assert sum(line.startswith("fetched ") for line in lines) == 4


@pytest.fixture
def broken_http() -> Iterator[dict[str, str]]:
    """Two servers on 127.0.0.1: one that does not speak HTTP, one whose chunked body stops."""
    answers = {
        "ssh": b"SSH-2.0-OpenSSH_9.6\r\n",
        "cut": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n" + b"x" * 40,
        "unsized": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 5000,  # no length
    }

    def handler(answer: bytes) -> type[socketserver.BaseRequestHandler]:
        class Answer(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.recv(4096)
                self.request.sendall(answer)

        return Answer

    servers = {
        k: socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler(a)) for k, a in answers.items()
    }
    for server in servers.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield {k: f"http://127.0.0.1:{s.server_address[1]}/" for k, s in servers.items()}
    finally:
        for server in servers.values():
            server.shutdown()
            server.server_close()


def test_mirrors_that_answer_other_than_http_fall_through(
    tmp_path: Path, tiny_files, broken_http: dict[str, str]
) -> None:
    sha = write_mirror(tmp_path / "good", tiny_files)
    bad = (broken_http["ssh"], broken_http["cut"])
    result = fetch(data_params(sha, *bad, tmp_path / "good"), Layout(tmp_path), False)
    assert result.downloaded == {name: str(tmp_path / "good") for name in tiny_files}
    with pytest.raises(DataError) as info:
        fetch(data_params(sha, *bad), Layout(tmp_path / "other"), show_progress=False)
    message = str(info.value)
    assert f"  {bad[0]}: train-images-idx3-ubyte.gz: not an HTTP answer: BadStatusLine" in message
    assert f"  {bad[1]}: train-images-idx3-ubyte.gz: download interrupted after " in message
    assert "IncompleteRead" in message


def test_a_damaged_dataset_file_is_named_with_its_folder(tmp_path: Path, tiny_files) -> None:
    """A file cut short in data/mnist (a bad checkout, a copy of a run folder) is one error
    naming where it is and what replaces it, not the bare file name."""
    folder = Layout(tmp_path).data_dir
    write_mirror(folder, tiny_files, gz=False)
    (folder / TRAIN_IMAGES).write_bytes(b"\x00\x00\x08")
    with pytest.raises(DataError) as refused:
        load_mnist(folder)
    assert str(refused.value) == (
        f"{folder / TRAIN_IMAGES} is not a valid MNIST file ({TRAIN_IMAGES}: too short for an "
        "IDX header (3 bytes)): run `mnist-pipeline fetch`, which replaces a file that does not "
        "verify"
    )
    with (folder / TRAIN_IMAGES).open("wb") as huge:  # sparse: takes no disk, nor is it read
        huge.truncate(idx.MAX_FILE_BYTES + 1)
    with pytest.raises(DataError) as refused:
        load_mnist(folder)
    assert str(refused.value).startswith(
        f"{folder / TRAIN_IMAGES} is not a valid MNIST file ({idx.MAX_FILE_BYTES + 1:,} bytes, "
        f"more than the {idx.MAX_FILE_BYTES:,} this file may hold): run `mnist-pipeline fetch`"
    )


def test_a_nul_in_a_local_source_is_a_mirror_error_not_a_traceback() -> None:
    """A source that reached the opener with a NUL (%00 in a file:// URL) fails that mirror
    with a reason, so the next mirror is tried (before: ValueError, a traceback)."""
    from mnist_pipeline.data.fetch import MirrorError, _open

    with pytest.raises(MirrorError, match="not a usable path: embedded null byte"):
        _open("file:///srv/mnist%00/train-images-idx3-ubyte.gz", 1.0)


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root")
def test_a_read_only_data_folder_is_named_before_any_download(tmp_path: Path, tiny_mirror) -> None:
    """data/mnist on a read-only mount: named as the folder to fix (the download's temp file,
    `data/mnist/tmpk13lh8e5`, was named before), and nothing downloaded into it."""
    mirror, sha = tiny_mirror
    data = Layout(tmp_path).data_dir
    data.mkdir(parents=True)
    params = {"data": {"mirrors": [str(mirror)], "sha256": sha}}
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    script = (
        f"mount --bind -o ro {shlex.quote(str(data))} {shlex.quote(str(data))} && exec "
        f"{shlex.quote(sys.executable)} -m mnist_pipeline --root {shlex.quote(str(tmp_path))} "
        "fetch"
    )
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 74, done.stderr
    assert done.stderr.strip() == f"error: {data}: Read-only file system"
    assert list(data.iterdir()) == []
