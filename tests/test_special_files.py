"""A pipe, a device or a folder where the program expects a file is refused at once with an
error naming it; before, a named pipe made the reader wait for a writer that never came (with
the inbox lock held, for pending records) and a link to /dev/zero was read until memory ran out."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from flows.sweep import read_grid
from mnist_pipeline.core.errors import DataError, ParamsError, PipelineError, RegistryError
from mnist_pipeline.core.regular_file import (
    FileTooLarge,
    NotRegularFile,
    read_regular,
    read_regular_stat,
)
from mnist_pipeline.core.reports import Metrics, read_report
from mnist_pipeline.inbox import pending
from mnist_pipeline.registry.local import LocalFolder
from mnist_pipeline.registry.signing import Signing
from mnist_pipeline.serving.shadow_report import read_status

WAIT_S = 20.0  # far longer than any refusal takes; a reader still blocked after it waits forever


def without_waiting(call: Callable[[], object], pipe: Path) -> BaseException | None:
    """What `call` raised (None: it returned), run in a thread; fails if it was still waiting
    after WAIT_S (then a writer opens and closes `pipe`, so the blocked reader returns and the
    test can end)."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(WAIT_S)
    if thread.is_alive():
        os.close(os.open(pipe, os.O_WRONLY))  # the blocked reader gets end of file
        thread.join(WAIT_S)
        pytest.fail(f"waited on the pipe {pipe} for a writer")
    return raised[0] if raised else None


def test_only_a_regular_file_of_at_most_its_limit_is_read(tmp_path: Path) -> None:
    pipe, zero, folder = tmp_path / "pipe", tmp_path / "zero", tmp_path / "folder"
    os.mkfifo(pipe)
    zero.symlink_to("/dev/zero")
    folder.mkdir()
    refused = without_waiting(lambda: read_regular(pipe), pipe)
    assert isinstance(refused, NotRegularFile) and refused.filename == str(pipe)
    with pytest.raises(NotRegularFile, match="not a regular file .a device, pipe or socket"):
        read_regular(zero)
    with pytest.raises(IsADirectoryError) as in_folder:
        read_regular(folder)
    assert in_folder.value.filename == str(folder)  # not the descriptor's number
    small = tmp_path / "small"
    small.write_bytes(b"x" * 10)
    (tmp_path / "link").symlink_to(small)
    assert read_regular(tmp_path / "link", 10) == b"x" * 10  # links to files are followed
    data, found = read_regular_stat(small)
    assert data == b"x" * 10 and found.st_size == 10
    with pytest.raises(FileTooLarge, match="10 bytes, more than the 9 this file may hold"):
        read_regular(small, 9)
    before = len(os.listdir(f"/proc/{os.getpid()}/fd"))
    for _ in range(5):
        with pytest.raises(OSError):
            read_regular(folder)
    assert len(os.listdir(f"/proc/{os.getpid()}/fd")) == before  # no descriptor left open


def test_keys_reports_records_grids_and_saved_answers_refuse_a_pipe(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    pending_area = tmp_path / "pending"
    pending_area.mkdir()
    os.mkfifo(pending_area / "record.json")
    readers: list[tuple[Callable[[], object], Path, type[Exception], str]] = [
        (lambda: Signing.load(pipe, [], False), pipe, RegistryError, "cannot read signing key"),
        (lambda: Signing.load(None, [pipe], False), pipe, RegistryError, "cannot read trusted"),
        (lambda: read_report(Metrics, pipe, "evaluate"), pipe, PipelineError, "not readable"),
        (lambda: read_status(pipe), pipe, DataError, "not a saved GET /model answer"),
        (lambda: read_grid(pipe), pipe, ParamsError, "sweep grid file: cannot read it"),
        (
            lambda: pending.items(pending_area),
            pending_area / "record.json",
            pending.BadRecord,
            "not a pending-image record (not a regular file",
        ),
    ]
    for call, path, kind, message in readers:
        refused = without_waiting(call, path)
        assert isinstance(refused, kind), (message, refused)
        assert message in str(refused) and "not a regular file" in str(refused), str(refused)


def test_model_files_and_candidate_files_refuse_a_pipe(tmp_path: Path) -> None:
    """`mkfifo models/model.pt; mnist-pipeline evaluate` waited for a writer."""
    from mnist_pipeline.core.params import ParityParams
    from mnist_pipeline.export.parity import check_parity
    from mnist_pipeline.model.weights import load_model
    from tests.registry_helpers import make_candidate

    weights, onnx = tmp_path / "model.pt", tmp_path / "model.onnx"
    os.mkfifo(weights)
    os.mkfifo(onnx)

    def parity() -> object:
        return check_parity(ParityParams(), "seed", weights, onnx, tmp_path, tmp_path / "p.json")

    assert isinstance(without_waiting(lambda: load_model("seed", weights), weights), NotRegularFile)
    assert isinstance(without_waiting(parity, onnx), NotRegularFile)
    candidate = make_candidate(tmp_path / "candidate", 1)
    plot = tmp_path / "candidate" / "plots" / "confusion_matrix.png"
    plot.unlink()
    os.mkfifo(plot)
    refused = without_waiting(candidate.read, plot)
    assert isinstance(refused, RegistryError) and f"{plot} is not a regular file" in str(refused)


def test_the_inbox_files_this_program_keeps_beside_it_refuse_a_pipe(tmp_path: Path) -> None:
    """A pipe at the trigger's count would block `data add` under the inbox lock; one at the
    shared store's bookkeeping or ingest's manifest would block sync and registration."""
    from mnist_pipeline.inbox import events, orphans, seen
    from mnist_pipeline.pipeline.promotion import check_split_with

    inbox = tmp_path / "data" / "extra"
    inbox.mkdir(parents=True)
    for path in (events.pending_file(inbox), seen.base_file(inbox), orphans.file(inbox)):
        os.mkfifo(path)
    got: list[object] = []  # what each reader returned: as for a file missing or damaged
    count = without_waiting(
        lambda: got.append(events.read_count(inbox)), events.pending_file(inbox)
    )
    assert count is None and got == [(0, 0)]
    refused = without_waiting(lambda: seen._base(inbox), seen.base_file(inbox))
    assert isinstance(refused, DataError) and "not a regular file" in str(refused)
    first_seen = lambda: got.append(orphans._first_seen(inbox, "s3://b/p"))  # noqa: E731
    assert without_waiting(first_seen, orphans.file(inbox)) is None and got == [(0, 0), {}]
    manifest = tmp_path / "ingested" / "manifest.json"
    manifest.parent.mkdir()
    os.mkfifo(manifest)
    refused = without_waiting(lambda: check_split_with(manifest.parent, 20), manifest)
    assert isinstance(refused, NotRegularFile)


def test_a_folder_in_a_local_store_is_refused_by_name(tmp_path: Path) -> None:
    store = LocalFolder(tmp_path / "store")
    (tmp_path / "store" / "a" / "dir").mkdir(parents=True)
    with pytest.raises(RegistryError, match=r"store/a/dir is a folder, expected a file$"):
        store.read("a/dir")
    assert store.read("a/missing") is None


def test_dataset_files_ingested_splits_and_the_robustness_cache_refuse_a_pipe(
    tmp_path: Path,
) -> None:
    """A pipe where a fetched MNIST file, an ingested split or a cached robustness set belongs
    made `train`, `evaluate` and `fetch`'s check wait for a writer."""
    from mnist_pipeline.data.dataset import load_mnist
    from mnist_pipeline.data.manifest import file_sha256
    from mnist_pipeline.evaluation import robustness_cache
    from mnist_pipeline.inbox.extra import images_file, read_split

    mnist = tmp_path / "mnist"
    mnist.mkdir()
    os.mkfifo(mnist / "train-images-idx3-ubyte")
    fifo = mnist / "train-images-idx3-ubyte"
    refused = without_waiting(lambda: load_mnist(mnist), fifo)
    assert isinstance(refused, NotRegularFile), refused
    hashed = without_waiting(lambda: file_sha256(fifo), fifo)
    assert isinstance(hashed, NotRegularFile), hashed
    extra = tmp_path / "extra"
    extra.mkdir()
    os.mkfifo(extra / images_file("train"))
    refused = without_waiting(lambda: read_split(extra, "train"), extra / images_file("train"))
    assert isinstance(refused, NotRegularFile), refused

    images = np.zeros((4, 28, 28), np.uint8)
    images[:, 8:20, 12:16] = 255  # a bar of ink: every transformation finds it
    labels = np.arange(4, dtype=np.uint8)
    cache = tmp_path / "cache"
    cache.mkdir()
    key = robustness_cache.cache_key(images, labels, 2, 0)
    os.mkfifo(cache / f"{key}.npz")
    rendered = without_waiting(
        lambda: robustness_cache.cached_robustness_set(images, labels, 2, cache),
        cache / f"{key}.npz",
    )
    assert rendered is None  # a miss: rendered afresh and stored in the pipe's place
    assert (cache / f"{key}.npz").is_file()
    again = robustness_cache.read(cache / f"{key}.npz", key, 2)
    assert again is not None and set(again) == set(robustness_cache.TRANSFORMS)
