"""Registry faults: processes killed mid-registration, and 8 processes registering at once."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnist_pipeline.core.errors import RegistryError, StoreError
from mnist_pipeline.data.manifest import file_sha256
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import GRACE_S, Registry, commit
from mnist_pipeline.registry.garbage import PARTIAL_GRACE_S
from mnist_pipeline.registry.local import LocalFolder
from tests.conftest import REPO_ROOT
from tests.registry_helpers import (
    MODEL,
    PARAMS,
    candidate_in,
    make_candidate,
    read_failing_for,
)


def worker(root: Path, candidate: Path, *extra: str) -> subprocess.Popen[str]:
    """A `tests.registry_helpers` process registering `candidate` into `root`."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.registry_helpers", str(root), str(candidate), *extra],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == "ready", proc.stderr.read() if proc.stderr else line


def leftovers(registry: Registry) -> list[str]:
    """Stored objects no version refers to: what a registration that died before its commit
    point left behind."""
    return registry.garbage()


def assert_intact(registry: Registry) -> list[int]:
    """verify() is clean, versions are 1..n, every alias points at an existing version."""
    assert registry.verify() == []
    versions = [card["version"] for card in registry.versions()]
    assert versions == list(range(1, len(versions) + 1))
    assert set(registry.aliases().values()) <= set(versions)
    return versions


@pytest.mark.parametrize("step", ["before-commit", "after-commit", "aliases"])
def test_crash_at_each_step_leaves_no_half_version(
    tmp_path: Path, registry_root: str, step: str
) -> None:
    registry = Registry(registry_root, MODEL)
    first = make_candidate(tmp_path / "c1", 1)
    register_candidate(registry, first, PARAMS)
    make_candidate(tmp_path / "c2", 2, accuracy=0.995)
    proc = worker(registry.root, tmp_path / "c2", "--crash-at", step)
    assert proc.wait(timeout=120) == 9
    committed = step != "before-commit"
    assert assert_intact(registry) == ([1, 2] if committed else [1])
    assert bool(leftovers(registry)) is (step == "before-commit")
    # a version committed before the alias file was written gets its alias by replay
    assert registry.aliases() == {"production": 2 if committed else 1}
    stored = json.loads(registry.storage.read(f"{MODEL}/aliases.json"))
    assert stored["last_version"] == 1  # the dead writer never updated the file
    third = register_candidate(registry, make_candidate(tmp_path / "c3", 3, accuracy=0.9), PARAMS)
    assert third.version == (3 if committed else 2) and third.alias == "staging"
    assert bool(registry.collect_garbage(min_age_s=0).removed) is (
        step == "before-commit"
    )  # `models gc`
    assert leftovers(registry) == []
    log = registry.alias_log()
    assert log["history"]["production"] == ([1, 2] if committed else [1])
    assert assert_intact(registry)


@pytest.mark.parametrize("step", ["blob-written", "aliases-written"])
def test_a_temp_file_a_killed_writer_left_is_garbage_once_old(tmp_path: Path, step: str) -> None:
    """On a local folder a write goes through a temp file, which a kill leaves behind: not
    counted while a writer could still be at it, then listed by `garbage` and removed by gc."""
    registry = Registry(tmp_path / "registry", MODEL)
    register_candidate(registry, make_candidate(tmp_path / "c1", 1), PARAMS)
    make_candidate(tmp_path / "c2", 2, accuracy=0.995)
    assert worker(registry.root, tmp_path / "c2", "--crash-at", step).wait(timeout=120) == 9
    [partial] = [p for p in Path(registry.root).rglob(".*") if ".tmp" in p.name]
    name = partial.relative_to(registry.root).as_posix()
    assert name.startswith(f"{MODEL}/blobs/" if step == "blob-written" else f"{MODEL}/.aliases")
    assert_intact(registry)
    assert name not in registry.garbage()  # fresh: its writer may be alive
    kept = registry.collect_garbage(min_age_s=0)  # even asked to: a promote may be renaming it
    assert name in kept.kept and name not in kept.removed and partial.exists()
    five_minutes = time.time() - PARTIAL_GRACE_S + 30  # not quite: still kept
    os.utime(partial, (five_minutes, five_minutes))
    assert name in registry.collect_garbage(min_age_s=0).kept and partial.exists()
    past = time.time() - PARTIAL_GRACE_S - 30  # gc takes it from 5 minutes on, verify at an hour
    os.utime(partial, (past, past))
    assert name not in registry.garbage()
    assert name in registry.collect_garbage().kept and partial.exists()  # younger than gc's hour
    assert name in registry.collect_garbage(min_age_s=0).removed and not partial.exists()
    partial.write_bytes(b"left again")
    old = time.time() - GRACE_S - 60
    os.utime(partial, (old, old))
    assert name in registry.garbage()
    assert name in registry.collect_garbage(min_age_s=0).removed and not partial.exists()
    committed = [1] if step == "blob-written" else [1, 2]  # the card is the commit point
    assert registry.garbage() == [] and assert_intact(registry) == committed
    if step == "blob-written":
        assert register_candidate(registry, candidate_in(tmp_path / "c2"), PARAMS).version == 2


def test_blobs_a_registration_finds_already_stored_are_young_again(tmp_path: Path) -> None:
    """A retry finds the blobs its killed attempt stored hours ago: their age restarts, so gc
    (which keeps young blobs) cannot take them before the retry's card commits."""
    registry = Registry(tmp_path / "registry", MODEL)
    register_candidate(registry, make_candidate(tmp_path / "c1", 1), PARAMS)
    make_candidate(tmp_path / "c2", 2, accuracy=0.995)
    proc = worker(registry.root, tmp_path / "c2", "--crash-at", "before-commit")
    assert proc.wait(timeout=120) == 9
    left = registry.garbage()
    old = time.time() - GRACE_S - 60
    for key in left:
        os.utime(Path(registry.root) / key, (old, old))
    ages = registry.storage.ages(f"{MODEL}/blobs/")
    assert left and all(ages[key] > GRACE_S for key in left)
    renewed = []
    renew = registry.storage.renew

    def gc_came_first(key: str) -> bool:  # gc took one of them just before the retry renews
        if not renewed:
            registry.storage.delete(key)
        renewed.append(key)
        return renew(key)

    registry.storage.renew = gc_came_first
    assert register_candidate(registry, candidate_in(tmp_path / "c2"), PARAMS).version == 2
    assert set(left) <= set(renewed) and registry.garbage() == []
    ages = registry.storage.ages(f"{MODEL}/blobs/")
    assert all(ages[key] < 60 for key in left), ages
    assert assert_intact(registry) == [1, 2]
    registry.fetch(2, "model.onnx")  # every file there and intact


def test_sigkill_at_random_points_never_leaves_a_half_version(
    tmp_path: Path, registry_root: str
) -> None:
    registry = Registry(registry_root, MODEL)
    # a larger state_dict widens the window in which a kill lands mid-copy
    make_candidate(tmp_path / "cand", 1, state_bytes=1 << 18)
    rng = random.Random(1234)
    for _ in range(10):
        proc = worker(registry.root, tmp_path / "cand", "--loop")
        try:  # killed also when its handshake fails: it would register forever
            wait_ready(proc)
            time.sleep(rng.uniform(0.0, 0.4))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        versions = assert_intact(registry)
        if versions:  # every registration promotes (same accuracy, margin 0)
            assert registry.aliases() == {"production": versions[-1]}
            registry.fetch("production", "model.onnx")
    n = len(assert_intact(registry))
    done = register_candidate(registry, make_candidate(tmp_path / "last", 2), PARAMS)
    registry.collect_garbage(min_age_s=0)
    assert done.version == n + 1 and leftovers(registry) == []
    assert registry.alias_log()["history"]["production"] == list(range(1, n + 2))
    assert_intact(registry)


def test_eight_concurrent_registrations_get_distinct_consecutive_versions(
    tmp_path: Path, registry_root: str
) -> None:
    registry = Registry(registry_root, MODEL)
    accuracies = [0.95, 0.97, 0.96, 0.99, 0.98, 0.93, 0.99, 0.94]
    sha = {}
    for i, accuracy in enumerate(accuracies):
        make_candidate(tmp_path / f"c{i}", i, accuracy=accuracy)
        sha[file_sha256(tmp_path / f"c{i}" / "model.onnx")] = accuracy
    go = tmp_path / "go"
    procs = [worker(registry.root, tmp_path / f"c{i}", "--go", str(go)) for i in range(8)]
    printed = []
    try:  # the others would wait for `go` forever if one fails to start
        for proc in procs:
            wait_ready(proc)
        go.touch()
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            printed.append(int(out.split()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
    assert sorted(printed) == list(range(1, 9))
    assert assert_intact(registry) == list(range(1, 9))
    cards = registry.versions()
    assert {card["files"]["model.onnx"] for card in cards} == set(sha)
    for card in cards:
        assert card["metrics"]["accuracy"] == sha[card["files"]["model.onnx"]]
    # each automatic promotion was made against the champion of its moment
    production = registry.alias_log()["history"]["production"]
    by_version = {card["version"]: card["metrics"]["accuracy"] for card in cards}
    steps = [by_version[v] for v in production]
    assert steps == sorted(steps) and steps[-1] == max(accuracies)
    assert registry.aliases()["production"] == production[-1]
    json.loads(registry.storage.read(f"{MODEL}/aliases.json"))  # valid JSON


def test_disk_full_after_commit_reports_the_committed_version_truthfully(
    registry: Registry, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version is committed before aliases.json is rewritten: a full disk at that moment
    must not report a failed registration while production changed."""
    register_candidate(registry, make(1, accuracy=0.98), PARAMS)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(LocalFolder, "swap", disk_full)
        done = register_candidate(registry, make(2, accuracy=0.99), PARAMS)
    assert (done.version, done.alias) == (2, "production")
    assert done.warning is not None and "No space left on device" in done.warning
    assert "warning: aliases.json could not be updated" in done.summary()
    assert registry.aliases() == {"production": 2}  # the card's decision applies at once
    assert registry.fetch("production", "model.onnx") == registry.fetch("2", "model.onnx")
    register_candidate(registry, make(3, accuracy=0.97), PARAMS)  # the next write catches up
    stored = json.loads(registry.storage.read(f"{MODEL}/aliases.json"))
    assert stored["aliases"] == {"production": 2, "staging": 3} and stored["last_version"] == 3
    assert registry.verify() == []


def test_a_store_down_right_after_the_commit_still_reports_the_version(
    registry: Registry, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading the state back fails too: the committed version is reported, with a warning."""
    register_candidate(registry, make(1, accuracy=0.98), PARAMS)

    def down(*args, **kwargs):
        raise RegistryError("registry at http://store: connection refused")

    def down_from_now(*args, **kwargs):  # the first swap comes after the card's commit
        patch.setattr(LocalFolder, "read_document", down)
        down()

    with monkeypatch.context() as patch:
        patch.setattr(LocalFolder, "swap", down_from_now)
        done = register_candidate(registry, make(2, accuracy=0.99), PARAMS)
    assert (done.version, done.alias) == (2, "production") and "connection refused" in done.warning
    assert registry.aliases() == {"production": 2}  # the card's decision, replayed


def test_a_version_committed_while_another_records_its_own_is_replayed_not_lost(
    registry: Registry, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v2's writer records its decision from the listing it made before committing; v3, whose
    writer commits in between and dies before recording it, is not in that listing. v2 is
    recorded as its writer's own, v3 is replayed by the next reader, and nothing is skipped."""
    register_candidate(registry, make(1, accuracy=0.97), PARAMS)
    other = Registry(registry.root, MODEL)  # another host
    record = commit.swap_aliases

    def died(*args, **kwargs):
        raise OSError(errno.EIO, "the writer died")

    def other_commits_first(reg, change, actor=None, own=None, listed=None):
        if reg is registry:
            assert listed == [1, 2]  # the listing is reused, not made again
            with monkeypatch.context() as patch:
                patch.setattr(commit, "swap_aliases", died)
                assert register_candidate(other, make(3, accuracy=0.99), PARAMS).version == 3
        return record(reg, change, actor, own, listed)

    monkeypatch.setattr(commit, "swap_aliases", other_commits_first)
    assert register_candidate(registry, make(2, accuracy=0.98), PARAMS).version == 2
    monkeypatch.undo()
    stored = json.loads(registry.storage.read(f"{MODEL}/aliases.json"))
    assert stored["last_version"] == 2  # v3 is not recorded yet, and not skipped
    events = {e["version"]: e for e in Registry(registry.root, MODEL).alias_log()["events"]}
    assert sorted(events) == [1, 2, 3]
    assert "replayed" not in events[2]["evidence"] and events[3]["evidence"]["replayed"]
    register_candidate(registry, make(4, accuracy=0.96), PARAMS)  # the next write stores it
    stored = json.loads(registry.storage.read(f"{MODEL}/aliases.json"))
    assert stored["last_version"] == 4 and registry.verify() == []


def disk_error(*args, **kwargs):
    raise OSError(errno.EIO, "Input/output error")


def test_a_card_the_store_fails_to_give_during_a_replay_is_not_passed_over(
    registry: Registry, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v2 is committed but its decision not yet recorded; a promotion that replays it while the
    store fails to read its card fails, and v2 keeps its decision for the next change."""
    register_candidate(registry, make(1, accuracy=0.98), PARAMS)
    with monkeypatch.context() as patch:
        patch.setattr(LocalFolder, "swap", disk_error)
        register_candidate(registry, make(2, accuracy=0.99), PARAMS)  # aliases.json not written
    timed_out = RegistryError("registry at http://store: read timed out")
    with monkeypatch.context() as patch:
        patch.setattr(LocalFolder, "read", read_failing_for("/v2/card.json", timed_out))
        with pytest.raises(RegistryError, match="read timed out"):
            registry.promote(1, "staging")
    registry.promote(1, "staging")  # the store answers again: v2's decision is recorded first
    stored = json.loads(registry.storage.read(f"{MODEL}/aliases.json"))
    assert stored["aliases"] == {"production": 2, "staging": 1} and stored["last_version"] == 2


def test_a_card_the_store_fails_to_give_stops_a_registration_not_a_listing(
    registry: Registry, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Passing over a card the store did not give could register its model a second time."""
    first = make(1, accuracy=0.98)
    register_candidate(registry, first, PARAMS)
    register_candidate(registry, make(2, accuracy=0.99), PARAMS)
    timed_out = StoreError("registry at http://store: read timed out")
    other = Registry(registry.root, MODEL)  # another process: it has read no card yet
    with monkeypatch.context() as patch:
        patch.setattr(LocalFolder, "read", read_failing_for("/v1/card.json", timed_out))
        listed = other.catalogue()
        assert [(v, card is not None) for v, card, _ in listed] == [(1, False), (2, True)]
        assert "read timed out" in str(listed[0][2])
        with pytest.raises(StoreError, match="read timed out"):
            register_candidate(other, first, PARAMS)
        with pytest.raises(StoreError, match="read timed out"):
            other.version_with_fingerprint(other.card(2)["inputs"])
        with pytest.raises(StoreError, match="read timed out"):  # it read v1 two registrations
            register_candidate(registry, first, PARAMS)  # ago: it reads it again
    assert registry.version_numbers() == [1, 2]
    assert register_candidate(registry, first, PARAMS).version == 1  # the store answers: held


def test_an_alias_change_stored_though_its_answer_was_lost_is_not_applied_again(
    registry: Registry, make
) -> None:
    """A rollback's write is stored but its answer lost, and another host writes on top before
    the retry: the retry's condition fails on that write, and the re-read log already holds
    the rollback. It must not be applied a second time (production two versions back)."""
    for seed, accuracy in ((1, 0.97), (2, 0.98), (3, 0.99)):
        register_candidate(registry, make(seed, accuracy=accuracy), PARAMS)
    assert registry.aliases() == {"production": 3}
    other = Registry(registry.root, MODEL)  # another host
    swap, lost = registry.storage.swap, []

    def answer_lost_then_overwritten(key: str, data: bytes, revision: str | None) -> bool:
        stored = swap(key, data, revision)
        if stored and not lost and key.endswith("aliases.json"):
            lost.append(key)
            other.promote(1, "staging")
            return False
        return stored

    registry.storage.swap = answer_lost_then_overwritten
    assert registry.rollback() == 2
    assert lost and registry.aliases() == {"production": 2, "staging": 1}
    actions = [e["action"] for e in registry.alias_log()["events"]]
    assert actions.count("rollback") == 1, actions
    assert registry.verify() == []
