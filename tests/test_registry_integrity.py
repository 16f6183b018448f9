"""Registry integrity: tampered, missing or edited files and cards are found and refused."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.pipeline.register import verify as verify_versions
from mnist_pipeline.pipeline.versions import load_state_dict
from mnist_pipeline.registry import Registry
from mnist_pipeline.registry.card import SEAL_KEY, seal
from tests.registry_helpers import (
    PARAMS,
    model_dir,
    stored,
    writable,
    write_reports,
    write_train_record,
)


def test_tampered_or_missing_files_are_refused(registry: Registry, make) -> None:
    register_candidate(registry, make(1, accuracy=0.98), PARAMS)
    register_candidate(registry, make(2, accuracy=0.99), PARAMS)  # better: production
    onnx = stored(registry, 2, "model.onnx")
    writable(onnx).write_bytes(onnx.read_bytes() + b"\0")
    with pytest.raises(
        RegistryError, match=r"refusing to load mnist-cnn v2: model.onnx was modified"
    ):
        registry.read_file("production", "model.onnx")
    with pytest.raises(RegistryError, match="damaged"):
        registry.promote(2, "staging")
    copy = registry.fetch("1", "model.onnx")  # other versions stay usable
    stored(registry, 1, "model.onnx").unlink()
    assert registry.fetch("1", "model.onnx") == copy  # the verified copy is still good
    with pytest.raises(RegistryError, match="model.onnx is missing"):
        registry.read_file("1", "model.onnx")
    (model_dir(registry) / "v1" / "notes.txt").write_text("x")
    problems = registry.verify()
    assert any("v2: model.onnx was modified" in p for p in problems)
    assert any("v1: model.onnx is missing" in p for p in problems)
    assert any("v1: notes.txt is not listed" in p for p in problems)


def test_registering_the_same_files_again_brings_a_lost_file_back(registry: Registry, make) -> None:
    """The store lost v1's model.onnx: registering the same run again stores it again (the
    version stays v1, nothing new registered), and v1 loads and verifies clean."""
    candidate = make(1)
    register_candidate(registry, candidate, PARAMS)
    onnx = stored(registry, 1, "model.onnx")
    original = onnx.read_bytes()
    onnx.unlink()
    assert any("v1: model.onnx is missing" in p for p in registry.verify())
    again = register_candidate(registry, candidate, PARAMS)
    assert (again.version, again.registered) == (1, False)
    assert registry.verify() == []
    assert registry.read_file("1", "model.onnx") == original


def test_registering_files_again_repairs_a_blob_the_store_damaged(
    registry: Registry, make, caplog: pytest.LogCaptureFixture
) -> None:
    """A blob whose bytes are not its SHA-256 (edited in the store): registering the same run
    again writes it anew, as a lost one is; a new run holding the same file repairs it too (it
    was refused with "is damaged", and so was every run holding that file, until it was
    deleted by hand)."""
    import logging

    candidate = make(1)
    register_candidate(registry, candidate, PARAMS)
    onnx = stored(registry, 1, "model.onnx")
    original = onnx.read_bytes()
    writable(onnx).write_bytes(original + b"\0")
    os.chmod(onnx, 0o444)
    assert any("v1: model.onnx was modified" in p for p in registry.verify())
    renewed: list[str] = []
    renew = registry.storage.renew
    registry.storage.renew = lambda key: renewed.append(key) or renew(key)  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="mnist_pipeline.registry"):
        again = register_candidate(registry, candidate, PARAMS)
    assert (again.version, again.registered) == (1, False)
    assert registry.verify() == [] and registry.read_file("1", "model.onnx") == original
    assert f"stored blob mnist-cnn/blobs/sha256/{onnx.name} in" in caplog.text
    assert "was damaged: written anew" in caplog.text
    assert oct(onnx.stat().st_mode & 0o777) == oct(0o444)  # read-only again, as created
    assert renewed == []  # a committed version's blobs are only read, none rewritten
    history = stored(registry, 1, "train_history.csv")  # the same in every run `make` makes
    writable(history).write_bytes(b"epoch\n")
    assert register_candidate(registry, make(2, accuracy=0.99), PARAMS).version == 2
    assert stored(registry, 2, "train_history.csv") == history and registry.verify() == []


def test_a_blob_another_writer_repaired_first_is_left_as_it_is(registry: Registry, make) -> None:
    """Two registrations of the same files repair one damaged blob at once: the one whose
    compare-and-swap is refused finds it intact and goes on (it failed with "changed")."""
    from mnist_pipeline.registry import blobs

    register_candidate(registry, make(1), PARAMS)
    onnx = stored(registry, 1, "model.onnx")
    original = onnx.read_bytes()
    writable(onnx).write_bytes(original + b"\0")
    swap = registry.storage.swap

    def another_writer_first(key: str, data: bytes, revision: str | None) -> bool:
        assert swap(key, data, revision)  # the other registration's repair
        return False  # so this one's revision is stale

    registry.storage.swap = another_writer_first  # type: ignore[method-assign]
    blobs.restore(registry, {onnx.name: original})
    assert onnx.read_bytes() == original and registry.verify() == []


def test_edited_card_is_refused(registry: Registry, make) -> None:
    register_candidate(registry, make(1, accuracy=0.98), PARAMS)
    card_path = stored(registry, 1, "card.json")
    card = json.loads(card_path.read_text())
    card["metrics"]["accuracy"] = 0.999
    writable(card_path).write_text(json.dumps(card))
    with pytest.raises(RegistryError, match="card.json was modified"):
        registry.card("1")
    with pytest.raises(RegistryError, match="card.json was modified"):
        registry.fetch("production", "model.onnx")
    assert any("card.json was modified" in p for p in registry.verify())


def test_verify_reports_gaps_and_dangling_aliases(registry: Registry, make) -> None:
    for seed in (1, 2, 3):  # each better than the last: production
        register_candidate(registry, make(seed, accuracy=0.97 + seed / 100), PARAMS)
    assert registry.verify() == []

    shutil.rmtree(model_dir(registry) / "v2")
    problems = registry.verify()
    assert "v2 is missing (versions must be consecutive)" in problems
    shutil.rmtree(model_dir(registry) / "v3")
    assert any("alias 'production' points at v3" in p for p in registry.verify())
    with pytest.raises(RegistryError, match="points at v3, which does not exist"):
        registry.fetch("production", "model.onnx")
    with pytest.raises(RegistryError, match="cannot compare with production v3"):
        register_candidate(registry, make(4), PARAMS)
    registry.promote(1, "production")
    assert register_candidate(registry, make(4), PARAMS).version == 4  # numbers are never reused


def test_corrupt_alias_file_is_reported(registry: Registry, make) -> None:
    register_candidate(registry, make(1), PARAMS)
    (model_dir(registry) / "aliases.json").write_text('{"aliases": {"../x": 1}}')
    with pytest.raises(RegistryError, match="invalid alias"):
        registry.aliases()
    document = model_dir(registry) / "aliases.json"
    document.write_text('{"aliases": {"production": 1}, "owner": "team-a"}')  # added by hand
    assert any("unknown field(s) 'owner'" in p for p in registry.verify()), registry.verify()
    with pytest.raises(RegistryError, match="unknown field\\(s\\) 'owner'"):
        registry.promote(1, "staging")
    assert "owner" in document.read_text()  # a write would have dropped it
    document.write_text("{not json")
    (model_dir(registry) / "stray.txt").write_text("x")  # still found beside it
    problems = registry.verify()
    assert any("not readable JSON" in p for p in problems)
    assert any("unexpected entry" in p and "stray.txt" in p for p in problems), problems


def test_state_dict_loads_verified_with_torch(registry: Registry, make, tmp_path: Path) -> None:
    import torch

    candidate = make(1)
    torch.save({"w": torch.arange(3.0)}, candidate.state_dict)
    write_train_record(candidate.onnx.parent)
    write_reports(candidate.onnx.parent)
    register_candidate(registry, candidate, PARAMS)
    assert torch.equal(load_state_dict(registry, "production")["w"], torch.arange(3.0))
    pt = stored(registry, 1, "model.pt")
    writable(pt).write_bytes(pt.read_bytes()[:-1])
    with pytest.raises(RegistryError, match="model.pt was modified"):
        load_state_dict(registry, "1")


def reseal(registry: Registry, version: int, edit) -> None:
    """Edit a stored card and seal it again, as anyone who can write the registry can."""
    path = stored(registry, version, "card.json")
    card = json.loads(path.read_text())
    edit(card)
    writable(path).write_text(json.dumps(seal({k: v for k, v in card.items() if k != SEAL_KEY})))


def test_verify_cross_checks_the_card_against_its_reports(registry: Registry, make) -> None:
    register_candidate(registry, make(1, accuracy=0.95), PARAMS)
    register_candidate(registry, make(2, accuracy=0.96), PARAMS)
    assert registry.verify() == []
    # A resealed card claiming a better accuracy than its evaluation measured.
    reseal(registry, 1, lambda card: card["metrics"].update(accuracy=0.999))
    # Another model.onnx swapped in, its hash fixed in a resealed card: parity never saw it.
    donor = json.loads(stored(registry, 1, "card.json").read_text())["files"]["model.onnx"]
    reseal(registry, 2, lambda card: card["files"].update({"model.onnx": donor}))
    assert registry.verify() == []  # the registry's own checks: seals and hashes hold
    assert verify_versions(registry) == [
        "v1: the card's accuracy 0.999 is not metrics.json's 0.95",
        "v2: parity.json checked another model.onnx than the card's",
    ]


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda card: card.update(schema="2"), "card.json has an unknown schema '2'"),
        (lambda card: card.update(schema=3), "card.json has an unknown schema 3"),
        (
            lambda card: card["files"].update({"../x": card["files"]["model.onnx"]}),
            "card.json lists an invalid file name '../x' in a version",
        ),
    ],
    ids=["schema-string", "schema-unknown", "path-outside"],
)
def test_a_resealed_card_of_another_shape_is_one_problem_not_a_crash(
    registry: Registry, make, edit, problem: str
) -> None:
    register_candidate(registry, make(1, accuracy=0.95), PARAMS)
    register_candidate(registry, make(2, accuracy=0.96), PARAMS)
    reseal(registry, 1, edit)
    assert registry.verify() == [f"mnist-cnn v1: {problem}"]
    with pytest.raises(RegistryError, match=re.escape(problem)):
        registry.card(1)
    listed = [(v, card is not None) for v, card, _ in registry.catalogue()]
    assert listed == [(1, False), (2, True)]  # the other version is listed
    register_candidate(registry, make(3, accuracy=0.97), PARAMS)  # and registering goes on
    assert registry.version_numbers() == [1, 2, 3]


@pytest.mark.parametrize("bad", [12345, None, "not-a-digest", "A" * 64])
def test_a_resealed_card_with_a_malformed_hash_is_one_problem_not_a_crash(
    registry: Registry, make, bad: object
) -> None:
    register_candidate(registry, make(1, accuracy=0.95), PARAMS)
    register_candidate(registry, make(2, accuracy=0.96), PARAMS)
    reseal(registry, 1, lambda card: card["files"].update({"model.onnx": bad}))
    (problem,) = registry.verify()
    assert "v1: card.json lists 'model.onnx' without a SHA-256" in problem
    with pytest.raises(RegistryError, match="without a SHA-256"):
        registry.card(1)
    assert registry.card(2)["version"] == 2  # the other version is unaffected


def test_a_pipe_or_device_where_a_file_belongs_is_a_problem_not_a_hang(
    registry: Registry, make
) -> None:
    """A FIFO would block the read until a writer came, /dev/zero would be read until memory
    ran out: both are refused, and verify goes on to the other versions."""
    for seed in (1, 2, 3):
        register_candidate(registry, make(seed), PARAMS)
    pipe, device = stored(registry, 1, "model.onnx"), stored(registry, 2, "model.onnx")
    for path in (pipe, device):
        writable(path).unlink()
    os.mkfifo(pipe)
    device.symlink_to("/dev/zero")
    for version, path in ((1, pipe), (2, device)):
        with pytest.raises(RegistryError, match="is not a regular file .a device, pipe or socket"):
            registry.read_file(version, "model.onnx")
        assert f"v{version}: {path} is not a regular file (a device, pipe or socket)" in (
            registry.verify()
        )
    folder = stored(registry, 3, "model.pt")
    writable(folder).unlink()
    folder.mkdir()
    with pytest.raises(RegistryError, match=f"^{folder} is a folder, expected a file$"):
        registry.read_file(3, "model.pt")
    assert f"v3: {folder} is a folder, expected a file" in registry.verify()
    assert registry.read_file(3, "model.onnx") == stored(registry, 3, "model.onnx").read_bytes()
    aliases = model_dir(registry) / "aliases.json"
    writable(aliases).unlink()
    os.mkfifo(aliases)
    assert f"{aliases} is not a regular file (a device, pipe or socket)" in registry.verify()


def test_a_malformed_signature_is_refused_by_a_host_that_trusts_no_key(
    registry: Registry, make
) -> None:
    """The signature lies outside the seal: a host without trusted keys checks nothing else
    about it, but one without an `ed25519` is damage, reported by verify and never promoted
    (a server would refuse it, answering 503 from a fresh start)."""
    register_candidate(registry, make(1, accuracy=0.95), PARAMS)
    register_candidate(registry, make(2, accuracy=0.94), PARAMS)  # staging
    path = stored(registry, 2, "card.json")
    card = json.loads(path.read_text())
    writable(path).write_text(json.dumps(card | {"signature": {"key_id": "k"}}))
    problems = registry.verify()
    assert len(problems) == 1 and "v2: its signature is unreadable" in problems[0], problems
    with pytest.raises(RegistryError, match="its signature is unreadable"):
        registry.promote(2, "production")
    assert registry.aliases()["production"] == 1


def test_verify_lists_a_report_the_store_could_not_read_and_goes_on(
    registry: Registry, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timeout reading one version's report is that version's problem, as the registry's own
    audit lists a store error: the other versions are still checked."""
    from mnist_pipeline.core.errors import StoreError

    register_candidate(registry, make(1, accuracy=0.95), PARAMS)
    register_candidate(registry, make(2, accuracy=0.96), PARAMS)
    reseal(registry, 2, lambda card: card["metrics"].update(accuracy=0.999))
    real = registry.read_file

    def flaky(ref: str | int, relpath: str) -> bytes:
        if str(ref) == "1" and relpath == "metrics.json":
            raise StoreError("s3://bucket/m: read timeout")
        return real(ref, relpath)

    monkeypatch.setattr(registry, "read_file", flaky)
    assert verify_versions(registry) == [
        "v1: s3://bucket/m: read timeout",
        "v2: the card's accuracy 0.999 is not metrics.json's 0.96",
    ]
