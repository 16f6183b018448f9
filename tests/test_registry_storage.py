"""The registry's storage interface on a local folder, and the registry's boundary: it imports
nothing of the pipeline, and nothing outside it reaches into its store."""

from __future__ import annotations

import ast
import errno
import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest

from mnist_pipeline.core.errors import ParamsError, RegistryError, StoreError
from mnist_pipeline.core.imports import PACKAGE_DIR, import_closure
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import parse_params
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import GRACE_S, Decision, Registry, Submission
from mnist_pipeline.registry.backends import open_storage
from mnist_pipeline.registry.card import seal
from mnist_pipeline.registry.local import LocalFolder
from mnist_pipeline.registry.registration import ChampionMoved
from mnist_pipeline.registry.signing import Signing
from tests.registry_helpers import PARAMS, model_dir, read_failing_for, stored, writable
from tests.reports import model_card

ALLOWED = {"mnist_pipeline/__init__.py", "mnist_pipeline/core/__init__.py"}
ALLOWED |= {"mnist_pipeline/core/errors.py", "mnist_pipeline/core/atomic.py"}
ALLOWED |= {"mnist_pipeline/core/json_text.py"}  # pure: JSON with bounded nesting
ALLOWED |= {"mnist_pipeline/core/regular_file.py"}  # a read that refuses pipes and devices
ALLOWED |= {"mnist_pipeline/core/text.py"}  # pure: control characters escaped or refused
ALLOWED |= {"mnist_pipeline/core/bucket_names.py"}  # pure: S3's rule for bucket names
# What code outside the registry may import of it: its API, not its storage.
PUBLIC = {"mnist_pipeline.registry", "mnist_pipeline.registry.registration"}
PUBLIC |= {"mnist_pipeline.registry.aliases", "mnist_pipeline.registry.signing"}


def test_create_is_create_if_absent(tmp_path: Path) -> None:
    store = LocalFolder(tmp_path)
    assert store.create("m/blobs/a", b"one") is True
    assert store.create("m/blobs/a", b"two") is False
    assert store.read("m/blobs/a") == b"one" and store.read("m/blobs/b") is None
    assert store.list("m/") == ["m/blobs/a"]  # no temp or lock files listed


def test_a_file_system_without_hard_links_is_named_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def vfat(*args) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", vfat)
    store = LocalFolder(tmp_path)
    with pytest.raises(OSError) as refused:
        store.create("m/blobs/a", b"one")
    assert refused.value.filename == str(tmp_path / "m/blobs/a")
    assert "may have no hard links" in refused.value.strerror and "s3://" in refused.value.strerror
    assert [p.name for p in (tmp_path / "m/blobs").iterdir()] == []  # the temp file removed


def test_another_users_file_is_renewed_by_a_copy_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a shared folder a blob may belong to another user, stored read-only: its time cannot
    be set (EACCES), so renew replaces it with the same bytes in a file of this user's."""
    import stat

    store = LocalFolder(tmp_path)
    assert store.create("m/blobs/a", b"blob")
    path = tmp_path / "m" / "blobs" / "a"
    old = time.time() - 7200
    os.utime(path, (old, old))

    def not_owner(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "utime", not_owner)
    assert store.renew("m/blobs/a") is True
    assert store.ages("m/blobs/")["m/blobs/a"] < 60 and path.read_bytes() == b"blob"
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert [p.name for p in path.parent.iterdir()] == ["a"]  # no temp file left
    assert store.renew("m/blobs/gone") is False

    def sticky(*args, **kwargs):  # a folder whose sticky bit keeps others' files in place
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "replace", sticky)
    with pytest.raises(RegistryError, match=r"cannot renew m/blobs/a, another user's file: .*"):
        store.renew("m/blobs/a")
    assert path.read_bytes() == b"blob" and [p.name for p in path.parent.iterdir()] == ["a"]


def test_only_a_partial_writes_name_is_removed_as_one(tmp_path: Path) -> None:
    store = LocalFolder(tmp_path)
    store.create("m/blobs/a", b"one")
    for name in ("m/blobs/a", "m/blobs/../blobs/a", ".m.tmp", "m/.lock"):
        with pytest.raises(RegistryError):
            store.remove_abandoned(name)
    assert store.read("m/blobs/a") == b"one" and store.abandoned("m/", 0.0) == []


def test_list_takes_any_string_prefix(tmp_path: Path) -> None:
    """As S3 lists: `m/v` finds m/v1/... and m/v22/..., not m/blobs/... or m/aliases.json."""
    store = LocalFolder(tmp_path)
    for key in ("m/v1/card.json", "m/v22/card.json", "m/blobs/sha256/ab", "m/aliases.json"):
        store.create(key, b"x")
    assert store.list("m/v") == ["m/v1/card.json", "m/v22/card.json"]
    assert store.list("m/v2") == ["m/v22/card.json"]
    assert store.list("m/") == sorted(
        ["m/aliases.json", "m/blobs/sha256/ab", "m/v1/card.json", "m/v22/card.json"]
    )
    assert store.list("n/") == [] and store.list("") == store.list("m/")


def test_racing_creates_have_one_winner(registry_root: str) -> None:
    """On a folder and on S3 (moto's server)."""
    store, go, won = open_storage(registry_root), threading.Barrier(16), []

    def racer(i: int) -> None:
        go.wait()
        if store.create("m/v1/card.json", str(i).encode()):
            won.append(i)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and store.read("m/v1/card.json") == str(won[0]).encode()


def test_read_many_reads_each_key_in_order(registry_root: str) -> None:
    """On a folder (one by one) and on S3 (GETs in flight at once): absent keys are None."""
    store = open_storage(registry_root)
    wanted = [f"m/blobs/sha256/{i:02d}" for i in range(40)]
    for key in wanted[::2]:
        store.create(key, key.encode() * 100)
    expected = [key.encode() * 100 if i % 2 == 0 else None for i, key in enumerate(wanted)]
    assert store.read_many(wanted) == expected
    assert store.read_many(wanted[::-1]) == expected[::-1]
    assert store.read_many([]) == [] and store.read_many(wanted[:1]) == expected[:1]
    items = [(key, b"new") for key in wanted[:6]]
    assert store.create_many(items) == [False, True] * 3  # in order; only the absent ones
    assert store.read_many(wanted[:6]) == [expected[i] or b"new" for i in range(6)]


def test_a_document_is_deleted_only_at_the_revision_read(registry_root: str) -> None:
    store = open_storage(registry_root)
    store.create("m/doc.json", b"one")
    _, first = store.read_document("m/doc.json")
    store.delete("m/doc.json")
    store.create("m/doc.json", b"two")  # written again since it was read
    assert store.delete_document("m/doc.json", first) is False
    assert store.read("m/doc.json") == b"two"
    _, second = store.read_document("m/doc.json")
    assert store.delete_document("m/doc.json", second) is True
    assert store.read("m/doc.json") is None
    assert store.delete_document("m/doc.json", second) is True  # already gone


class OneUnreadable(LocalFolder):
    """A folder whose one object cannot be read (as an S3 object refused or failing)."""

    def __init__(self, root: Path, key: str) -> None:
        super().__init__(root)
        self.unreadable = key

    def read(self, key: str) -> bytes | None:
        if key == self.unreadable:
            raise RegistryError(f"{key}: read failed (AccessDenied)")
        return super().read(key)


def test_one_unreadable_card_hides_no_other_version(tmp_path: Path, make) -> None:
    """read_many fails as a whole on one object; the catalogue then reads card by card."""
    for seed in (1, 2, 3):
        register_candidate(Registry(tmp_path / "registry", "m"), make(seed), PARAMS)
    store = OneUnreadable(tmp_path / "registry", "m/v2/card.json")
    catalogue = Registry(store, "m").catalogue()
    assert [(v, card is not None) for v, card, _ in catalogue] == [(1, True), (2, False), (3, True)]
    assert "AccessDenied" in str(catalogue[1][2])


def test_swap_is_compare_and_swap(tmp_path: Path) -> None:
    store = LocalFolder(tmp_path)
    assert store.swap("m/aliases.json", b"a", "not-absent") is False
    assert store.swap("m/aliases.json", b"a", None) is True
    assert store.swap("m/aliases.json", b"b", None) is False  # it exists now
    data, revision = store.read_document("m/aliases.json")
    assert data == b"a" and store.swap("m/aliases.json", b"b", revision) is True
    assert store.swap("m/aliases.json", b"c", revision) is False  # stale revision
    assert store.read("m/aliases.json") == b"b"


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a/.hidden", "a//b"])
def test_bad_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(RegistryError, match="invalid storage key"):
        LocalFolder(tmp_path).read(key)


def test_the_backend_is_chosen_by_scheme(tmp_path: Path) -> None:
    assert isinstance(open_storage(str(tmp_path)), LocalFolder)
    assert open_storage(f"file://{tmp_path}").location == str(tmp_path)
    spaced = tmp_path / "a b"
    assert open_storage(f"file://localhost{tmp_path}/a%20b").location == str(spaced)
    for elsewhere in ("file://srv/models", "file://"):
        with pytest.raises(RegistryError, match="a file:// URL names a folder on this machine"):
            open_storage(elsewhere)
        with pytest.raises(ParamsError, match="registry.root: .*a file:// URL names a folder"):
            parse_params({"registry": {"root": elsewhere}}, "params.yaml")
    layout = Layout(tmp_path / "project")
    assert layout.registry_root(f"file://localhost{tmp_path}/a%20b") == spaced
    assert layout.registry_root(f"file:{tmp_path}") == tmp_path
    assert layout.registry_root("file:///srv/models") == Path("/srv/models")
    assert layout.registry_root("registry") == tmp_path / "project" / "registry"
    assert layout.registry_root("s3://bucket/models") == "s3://bucket/models"
    with pytest.raises(RegistryError, match="unsupported scheme 'gs'"):
        open_storage("gs://bucket/models")


def test_the_registry_imports_nothing_of_the_pipeline() -> None:
    for module in sorted((PACKAGE_DIR / "registry").glob("*.py")):
        name = f"mnist_pipeline.registry.{module.stem}".removesuffix(".__init__")
        outside = [f for f in import_closure(name) if not f.startswith("mnist_pipeline/registry/")]
        assert set(outside) <= ALLOWED, (name, sorted(set(outside) - ALLOWED))


def test_nothing_outside_the_registry_reaches_into_its_store() -> None:
    """Callers use the Registry API (bytes, verified copies): they import neither its
    storage nor its key layout, and build no path inside it."""
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR).as_posix()
        if rel.startswith("registry/"):
            continue
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "mnist_pipeline.registry"
            ):
                assert node.module in PUBLIC, (rel, node.module)
        for inside in ("blobs/sha256", "card.json", "aliases.json"):
            assert inside not in source, (rel, inside)


def test_gc_keeps_unreferenced_files_younger_than_its_grace(registry: Registry, make) -> None:
    """A registration may be storing them still (on S3, even one whose lease ran out)."""
    register_candidate(registry, make(1), PARAMS)
    young = f"{registry.name}/blobs/sha256/{'0' * 64}"
    registry.storage.create(young, b"being stored")
    assert registry.garbage() == [young] and registry.collect_garbage().kept == [young]
    assert registry.storage.read(young) == b"being stored"
    path = model_dir(registry) / "blobs" / "sha256" / ("0" * 64)
    older = time.time() - GRACE_S - 60
    os.utime(path, (older, older))
    assert registry.storage.ages(f"{registry.name}/blobs/")[young] > GRACE_S
    assert registry.collect_garbage().removed == [young] and registry.garbage() == []
    assert registry.version_numbers() == [1] and registry.verify() == []


def test_gc_keeps_the_files_of_a_card_it_cannot_trust(registry: Registry, make) -> None:
    """A card whose seal fails is damage to report, not garbage: gc stops, since its file
    table may be the part edited (a file dropped from it would look unreferenced)."""
    register_candidate(registry, make(1), PARAMS)
    register_candidate(registry, make(2), PARAMS)
    older = time.time() - GRACE_S - 60
    for blob in (model_dir(registry) / "blobs" / "sha256").iterdir():
        os.utime(blob, (older, older))  # old enough for any gc
    card_path = stored(registry, 2, "card.json")
    card = json.loads(card_path.read_text())
    onnx = stored(registry, 2, "model.onnx")
    for edited in (
        {**card, "created": "edited"},
        {**card, "files": {k: v for k, v in card["files"].items() if k != "model.onnx"}},
    ):
        writable(card_path).write_text(json.dumps(edited))  # seal broken
        for collect in (registry.garbage, lambda: registry.collect_garbage(min_age_s=0)):
            with pytest.raises(RegistryError, match="v2: card.json was modified after regis"):
                collect()
        assert onnx.is_file()
    writable(card_path).write_text("{not json")
    with pytest.raises(RegistryError, match="v2: card.json is unreadable"):
        registry.collect_garbage()
    assert stored(registry, 1, "model.onnx").is_file()
    # valid JSON whose files table holds no SHA-256: the version is named too
    writable(card_path).write_text(json.dumps({**card, "files": {"model.onnx": "A" * 64}}))
    with pytest.raises(RegistryError, match="v2: card.json is unreadable"):
        registry.collect_garbage()


def test_gc_takes_only_blobs_under_the_blob_folder(registry: Registry, make) -> None:
    """A stray file, or another model's store put inside this one's blob folder (a
    registry.root pointing there), is no registration's leftover: gc leaves it."""
    register_candidate(registry, make(1), PARAMS)
    blobs = model_dir(registry) / "blobs" / "sha256"
    (blobs / "notes.txt").write_text("kept by hand")
    inner = Registry(blobs, "sha256")  # model `sha256` with its root inside the blob folder
    register_candidate(inner, make(2), PARAMS)
    older = time.time() - GRACE_S - 60
    for path in blobs.rglob("*"):
        os.utime(path, (older, older))
    assert registry.garbage() == [] and registry.collect_garbage(min_age_s=0).removed == []
    assert (blobs / "notes.txt").is_file() and inner.version_numbers() == [1]
    assert inner.verify() == [] and registry.verify() == []


def test_gc_keeps_the_files_of_a_version_whose_card_is_missing(registry: Registry, make) -> None:
    """A card gone from the middle of the versions (or the newest the alias document records)
    leaves its files looking unreferenced: gc stops, so restoring the card restores the
    version."""
    for n in (1, 2, 3):
        register_candidate(registry, make(n), PARAMS)
    older = time.time() - GRACE_S - 60
    for blob in (model_dir(registry) / "blobs" / "sha256").iterdir():
        os.utime(blob, (older, older))
    for version in (2, 3):  # v2: a gap; v3: the newest, recorded in aliases.json
        card_path = stored(registry, version, "card.json")
        card = card_path.read_bytes()
        card_path.unlink()
        with pytest.raises(RegistryError, match=f"v{version}: card.json is missing"):
            registry.collect_garbage()
        writable(card_path.parent).joinpath("card.json").write_bytes(card)
        assert registry.verify() == [] and registry.garbage() == []
    assert registry.fetch("3", "model.onnx").read_bytes() == make(3).onnx.read_bytes()


def test_gc_stops_at_a_folder_it_cannot_list(
    registry: Registry, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version folder another user made unreadable is no missing version: its old files are
    not garbage, and gc fails naming the folder instead of deleting them."""
    register_candidate(registry, make(1), PARAMS)
    register_candidate(registry, make(2), PARAMS)
    older = time.time() - GRACE_S - 60
    for blob in (model_dir(registry) / "blobs" / "sha256").iterdir():
        os.utime(blob, (older, older))
    scandir = os.scandir

    def refused_at_v2(path: str | Path = ".") -> object:
        if Path(path).name == "v2":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refused_at_v2)
    with pytest.raises(PermissionError, match="v2"):
        registry.collect_garbage()
    monkeypatch.undo()
    assert registry.verify() == [] and registry.garbage() == []
    assert registry.fetch("2", "model.onnx").read_bytes() == make(2).onnx.read_bytes()

    def gone_at_v2(path: str | Path = ".") -> object:  # removed between listing and walking
        if Path(path).name == "v2":
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", gone_at_v2)
    listed = registry.storage.list(f"{registry.name}/")
    monkeypatch.undo()
    assert f"{registry.name}/v1/card.json" in listed
    assert not any(key.startswith(f"{registry.name}/v2/") for key in listed)


def legacy_version(registry: Registry, make, version: int = 1) -> tuple[Path, bytes]:
    """A version as registered before blobs (schema 1, unsigned, decided against no champion):
    its folder and ONNX bytes."""
    onnx = make(version).onnx.read_bytes()
    folder = model_dir(registry) / f"v{version}"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(onnx)
    fingerprint = {
        "sha256": f"{version:x}" * 64,
        "dataset_sha256": "d" * 64,
        "extra_sha256": "none",
        "code_sha256": "c" * 64,
        "params": {},
    }
    legacy = model_card(
        schema=1,
        version=version,
        metrics={"accuracy": 0.9, "loss": 0.1, "correct": 90, "total": 100},
        fingerprint=fingerprint,
        files={"model.onnx": hashlib.sha256(onnx).hexdigest()},
    )
    del legacy["card_sha256"]
    (folder / "card.json").write_text(json.dumps(seal(legacy)))
    return folder, onnx


def test_versions_registered_before_blobs_are_still_read(registry: Registry, make) -> None:
    """Schema 1: files (and card.sig) inside v<N>/; read, verified and followed by schema 2."""
    folder, onnx = legacy_version(registry, make)
    assert registry.read_file("production", "model.onnx") == onnx
    assert registry.version_with_fingerprint("1" * 64) == 1 and registry.verify() == []
    done = register_candidate(registry, make(2, accuracy=0.995), PARAMS)
    assert (done.version, done.alias) == (2, "production")
    assert registry.card("2")["schema"] == 2 and registry.verify() == []
    (folder / "model.onnx").write_bytes(onnx + b"\0")
    with pytest.raises(RegistryError, match="v1: model.onnx was modified"):
        registry.read_file("1", "model.onnx")
    # its files are in its folder, not blobs: the same bytes again store no blob nobody names
    (folder / "model.onnx").write_bytes(onnx)
    assert registry.restore_lost({"model.onnx": onnx}, ("model.onnx",)) == 1
    assert registry.garbage() == [] and registry.verify() == []


def test_a_store_failing_to_give_a_legacy_card_sig_fails_the_replay_not_the_version(
    registry: Registry, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v1 and v2 predate the alias document; a promotion of v1 while the store cannot give v2's
    card.sig fails, and v2 keeps its decision for the next change."""
    legacy_version(registry, make, 1)
    legacy_version(registry, make, 2)
    timed_out = StoreError("registry at http://store: read timed out")
    with monkeypatch.context() as patch:
        patch.setattr(LocalFolder, "read", read_failing_for("/v2/card.sig", timed_out))
        with pytest.raises(StoreError, match="read timed out"):
            registry.promote(1, "candidate")
    registry.promote(1, "candidate")
    assert registry.aliases() == {"production": 1, "staging": 2, "candidate": 1}


def test_a_decision_against_a_moved_champion_is_taken_again(registry: Registry, make) -> None:
    """The registry refuses a decision reached against another production (nothing stored);
    the pipeline then compares with the new champion."""
    candidate = make(1, accuracy=0.95)
    stale = Submission({"model.onnx": candidate.onnx.read_bytes()}, {}, Decision("production", "x"))
    register_candidate(registry, make(2, accuracy=0.96), PARAMS)  # production is v1 now
    with pytest.raises(ChampionMoved, match="production moved from none to v1"):
        registry.register(stale)
    assert registry.version_numbers() == [1]
    done = register_candidate(registry, candidate, PARAMS)  # decided against v1: worse
    assert (done.version, done.alias, done.champion) == (2, "staging", 1)


def test_inputs_that_reproduced_a_version_are_remembered_for_it(registry_root: str) -> None:
    """A retraining after an edit that changes the fingerprint but not the model (a comment in
    a params module the train stage imports) registers nothing; asked again with the same
    inputs, the registry names the version, so the next scheduled run does not train once more
    (before: it trained again on every run until the weights changed)."""
    registry = Registry(registry_root, "mnist-cnn")
    files = {"model.pt": b"weights", "model.onnx": b"graph"}
    identity = ("model.pt", "model.onnx")

    def submit(fingerprint: str, alias: str = "production", champion: int | None = None):
        decision = Decision(alias, "test", champion)
        return registry.register(
            Submission(files, {}, decision, identity, fingerprint), skip_same_inputs=True
        )

    assert submit("a" * 64).version == 1
    again = submit("b" * 64, "staging", 1)
    assert (again.version, again.registered) == (1, False)
    assert registry.version_with_fingerprint("b" * 64) == 1
    assert registry.version_with_fingerprint("a" * 64) == 1
    assert registry.version_with_fingerprint("c" * 64) is None
    assert registry.verify() == [] and registry.garbage() == []
    assert registry.version_numbers() == [1]
    # a pointer names a version only: one that does not exist, bytes that are no pointer, or
    # a pointer moved to another fingerprint answer as if there were none, and verify says so
    put = lambda fp, body: registry.storage.create(f"mnist-cnn/inputs/{fp}.json", body)  # noqa: E731
    put("d" * 64, json.dumps({"inputs": "d" * 64, "model": "mnist-cnn", "version": 9}).encode())
    put("e" * 64, b"not json")
    put("f" * 64, registry.storage.read(f"mnist-cnn/inputs/{'b' * 64}.json"))
    put("0" * 64, json.dumps({"inputs": "0" * 64, "version": True}).encode())
    put("1" * 64, b"[" * 100_000)  # nested past any decoder's recursion
    for fingerprint in ("d" * 64, "e" * 64, "f" * 64, "0" * 64, "1" * 64, "not a digest"):
        assert registry.version_with_fingerprint(fingerprint) is None, fingerprint
    problems = registry.verify()
    assert (
        len(problems) == 5 and f"inputs/{'d' * 64}.json names v9, which does not exist" in problems
    )
    assert sum("not a pointer to a version" in p for p in problems) == 4, problems
    # asked again, a registration replaces a pointer that is not valid (an earlier release's,
    # without its model) instead of leaving every later run to train
    put("9" * 64, json.dumps({"inputs": "9" * 64, "version": 1}).encode())
    assert registry.version_with_fingerprint("9" * 64) is None
    assert submit("9" * 64, "staging", 1).registered is False
    assert registry.version_with_fingerprint("9" * 64) == 1
    assert not any(f"inputs/{'9' * 64}.json" in p for p in registry.verify())


def test_an_inputs_pointer_is_signed_and_an_unsigned_one_skips_nothing(
    tmp_path: Path, make
) -> None:
    """A pointer lets a run skip training: where signatures are required, one written by
    anyone who can write the store, without the key, must not stop retraining."""
    from tests.registry_helpers import key_pair

    key, public = key_pair(tmp_path)
    registry = Registry(tmp_path / "registry", "mnist-cnn", Signing.load(key, [public], True))
    files = {"model.pt": b"weights", "model.onnx": b"graph"}

    def submit(fingerprint: str, champion: int | None):
        decision = Decision("production" if champion is None else "staging", "t", champion)
        submission = Submission(files, {}, decision, ("model.pt", "model.onnx"), fingerprint)
        return registry.register(submission, skip_same_inputs=True)

    submit("a" * 64, None)
    assert submit("b" * 64, 1).registered is False
    stored = json.loads(registry.storage.read(f"mnist-cnn/inputs/{'b' * 64}.json"))
    assert set(stored) == {"inputs", "model", "version", "signature"}
    assert registry.version_with_fingerprint("b" * 64) == 1 and registry.verify() == []
    # signed by the same key for another model: copied, it names no version of this one
    other = Registry(tmp_path / "registry", "other-cnn", registry.signing)
    other.register(Submission(files, {}, Decision("production", "t", None), ("model.pt",)))
    pointer = registry.storage.read(f"mnist-cnn/inputs/{'b' * 64}.json")
    other.storage.create(f"other-cnn/inputs/{'b' * 64}.json", pointer)
    assert other.version_with_fingerprint("b" * 64) is None  # its next run trains
    assert any("made for model 'mnist-cnn', not 'other-cnn'" in p for p in other.verify())
    forged = {"inputs": "c" * 64, "model": "mnist-cnn", "version": 1}  # no key: unsigned
    forged = json.dumps(forged).encode()
    registry.storage.create(f"mnist-cnn/inputs/{'c' * 64}.json", forged)
    assert registry.version_with_fingerprint("c" * 64) is None  # the next run trains
    assert any("is not signed" in p for p in registry.verify())
    # unsigned, or signed by a key this host does not trust: kept for the hosts that accept it
    assert submit("c" * 64, 1).registered is False
    assert json.loads(registry.storage.read(f"mnist-cnn/inputs/{'c' * 64}.json"))["version"] == 1
    (tmp_path / "other").mkdir()
    other = Signing.load(key_pair(tmp_path / "other")[0], [], False)
    theirs = {"inputs": "d" * 64, "model": "mnist-cnn", "version": 1}
    theirs["signature"] = other.sign(theirs)
    registry.storage.create(f"mnist-cnn/inputs/{'d' * 64}.json", json.dumps(theirs).encode())
    assert submit("d" * 64, 1).registered is False
    assert json.loads(registry.storage.read(f"mnist-cnn/inputs/{'d' * 64}.json")) == theirs
    assert submit("not hex", 1).registered is False  # nothing to point from: still no error
    read = registry.storage.read

    def timing_out(key: str) -> bytes | None:
        if "/inputs/" in key:
            raise StoreError("s3://bucket/registry: read timed out")
        return read(key)

    registry.storage.read = timing_out  # type: ignore[method-assign]
    with pytest.raises(StoreError, match="timed out"):  # not "train again" for a store gone
        registry.version_with_fingerprint("b" * 64)


def test_a_submission_may_not_set_fields_the_registry_or_its_decision_owns(
    tmp_path: Path,
) -> None:
    """Evidence naming `alias` would have replaced the decision's alias in the card (the
    summary said production, the card another alias that replay ignored): refused, like a
    description naming a card field, with nothing stored."""
    registry = Registry(tmp_path / "registry", "mnist-cnn")
    files = {"model.pt": b"weights"}
    for decision, description, field in (
        (Decision("production", "t", None, {"alias": "Not Valid!"}), {}, "alias"),
        (Decision("production", "t", None, {"champion": 3}), {}, "champion"),
        (Decision("production", "t"), {"version": 7}, "version"),
    ):
        with pytest.raises(RegistryError, match=f"may not set .*'{field}'"):
            registry.register(Submission(files, description, decision, ("model.pt",)))
    assert registry.version_numbers() == [] and registry.storage.list("mnist-cnn/") == []


def test_a_create_the_folder_refuses_is_named_by_the_key_asked_for() -> None:
    """Not by the hidden temp file (`.k.<uuid>.tmp`) it writes first: no name the user knows."""
    with pytest.raises(OSError) as refused:
        LocalFolder(Path("/proc")).create("k", b"x")  # no file can be created there, even by root
    assert refused.value.filename == "/proc/k"
