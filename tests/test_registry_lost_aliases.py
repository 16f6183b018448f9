"""An alias document that lost events (deleted, emptied) is refused rather than rebuilt from the
cards, which would bring back what its lost events undid; `restart-aliases` starts it afresh.
And a card unsigned where this host requires signatures is not recorded as handled."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import LostAliases, Registry
from mnist_pipeline.registry.moves import Restarted
from mnist_pipeline.registry.signing import Signing
from mnist_pipeline.registry.trail import digest
from tests.registry_helpers import (
    MODEL,
    PARAMS,
    key_pair,
    model_dir,
    without_trail_anchors,
    writable,
)
from tests.test_registry_trail import LEGACY_FIELDS

EMPTY = {"aliases": {}, "history": {}, "events": [], "last_version": 0}


def lose(registry: Registry, how: str) -> None:
    """What a slip with `rm` or a bad restore does to the alias document."""
    path = writable(model_dir(registry) / "aliases.json")
    if how == "deleted":
        path.unlink()
    else:
        path.write_text(json.dumps(EMPTY))


def rolled_back(registry: Registry, make) -> Registry:
    """v1 and the better v2 registered for production, then production rolled back to v1."""
    register_candidate(registry, make(1, accuracy=0.97), PARAMS, 0.0)
    assert register_candidate(registry, make(2, accuracy=0.99), PARAMS, 0.0).alias == "production"
    registry.rollback(comment="v2 regressed on live traffic")
    assert registry.aliases() == {"production": 1}
    return registry


@pytest.mark.parametrize("how", ["deleted", "emptied"])
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_a_lost_alias_document_never_brings_back_a_rolled_back_version(
    tmp_path: Path, make, how: str, signed: bool
) -> None:
    """Replaying the cards onto a lost document would make v2 production again: every read
    and write refuses instead, naming the lost event, and verify reports it. A restart points
    nothing anywhere (signed like any event, so verify passes under require_signature) until
    a person promotes; registering goes on from there."""
    signing = Signing()
    if signed:
        key, pub = key_pair(tmp_path)
        signing = Signing.load(key, [pub], required=True)
    registry = rolled_back(Registry(tmp_path / "registry", MODEL, signing), make)
    first_event = registry.alias_log()["events"][0]["sha256"]
    lose(registry, how)

    lost_event = rf"no longer holds alias event {first_event[:12]}\.\.\., the last one when "
    for read in (registry.aliases, lambda: registry.version_of("production")):
        with pytest.raises(LostAliases, match=lost_event + f"{MODEL} v2 was registered"):
            read()
    with pytest.raises(LostAliases, match="restart-aliases"):
        registry.promote(1, "staging")
    with pytest.raises(LostAliases):
        register_candidate(registry, make(3, accuracy=0.995), PARAMS, 0.0)
    assert registry.version_numbers() == [1, 2]  # nothing committed
    assert any("no longer holds alias event" in p for p in registry.verify())

    assert registry.restart_aliases(actor="user:ops", comment="aliases.json lost").newest == 2
    assert registry.aliases() == {} and registry.verify() == []
    restart = registry.alias_log()["events"][-1]
    assert (restart["action"], restart["actor"], restart["version"]) == ("restart", "user:ops", 2)
    assert restart["evidence"] == {"lost": [first_event], "comment": "aliases.json lost"}
    assert ("signature" in restart) is signed
    with pytest.raises(RegistryError, match="nothing to restart"):
        registry.restart_aliases()
    registry.promote(1, "production", comment="the last good one")
    done = register_candidate(registry, make(3, accuracy=0.995), PARAMS, 0.0)
    assert (done.version, registry.aliases()) == (3, {"production": 3})
    assert registry.verify() == []


def test_after_a_restart_a_new_version_waits_for_a_person_to_promote(
    registry: Registry, make
) -> None:
    """A restart clears production: the next run's version must not take it uncompared (as a
    registry's first version does), or a scheduled retraining would undo what the lost
    events did (a rollback). It is kept as staging until someone promotes."""
    rolled_back(registry, make)
    lose(registry, "deleted")
    registry.restart_aliases(actor="user:ops")
    done = register_candidate(registry, make(3, accuracy=0.995), PARAMS, 0.0)
    assert (done.version, done.alias, registry.aliases()) == (3, "staging", {"staging": 3})
    assert "production was cleared by restart-aliases (by user:ops at " in done.reason
    registry.promote(3, "production", comment="checked after the restart")
    nxt = register_candidate(registry, make(4, accuracy=0.999), PARAMS, 0.0)
    assert nxt.champion == 3 and "restart" not in nxt.reason  # compared as usual from then on


def test_a_writer_that_died_before_recording_is_still_replayed(
    registry: Registry, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check tells a lost document from a late one: a version committed after the events
    the document holds, by a writer that never recorded it, gets its decision."""
    register_candidate(registry, make(1, accuracy=0.97), PARAMS, 0.0)
    with monkeypatch.context() as patch:  # every compare-and-swap lost: never recorded
        patch.setattr(type(registry.storage), "swap", lambda *a, **k: False)
        done = register_candidate(registry, make(2, accuracy=0.99), PARAMS, 0.0)
    stored = json.loads(registry.storage.read(f"{MODEL}/aliases.json"))
    assert done.warning and stored["last_version"] == 1
    assert registry.aliases() == {"production": 2}
    assert registry.verify() == []


@pytest.mark.parametrize("read", ["aliases", "verify", "promote"])
def test_a_move_and_a_registration_during_a_read_are_not_a_lost_document(
    tmp_path: Path, registry: Registry, make, monkeypatch: pytest.MonkeyPatch, read: str
) -> None:
    """Another host promotes, then registers v3 (its card naming the promotion), between this
    host's read of the document and its listing of the versions: the listing comes first, so
    v3 is not seen against a document read before its event was appended."""
    register_candidate(registry, make(1, accuracy=0.97), PARAMS, 0.0)
    register_candidate(registry, make(2, accuracy=0.96), PARAMS, 0.0)  # staging
    other = Registry(tmp_path / "registry", MODEL)  # another host: its own storage object
    real, raced = registry.storage.read_document, []

    def read_then_race(key: str):
        found = real(key)
        if key.endswith("aliases.json") and not raced:
            raced.append(1)
            other.promote(2, "production", comment="from another host")
            register_candidate(other, make(3, accuracy=0.999), PARAMS, 0.0)
        return found

    monkeypatch.setattr(registry.storage, "read_document", read_then_race)
    if read == "aliases":
        assert registry.aliases() in ({"production": 1, "staging": 2}, {"production": 2})
    elif read == "verify":
        assert registry.verify() == []
    else:
        registry.promote(1, "staging", comment="keep v1 at hand")
    assert raced and not registry.verify()
    assert other.aliases()["production"] in (2, 3)


def test_a_restart_stored_although_its_answer_was_lost_is_not_refused_on_retry(
    registry: Registry, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    rolled_back(registry, make)
    lose(registry, "deleted")
    real = type(registry.storage).swap

    def stored_but_refused(storage, key: str, data: bytes, revision):
        assert real(storage, key, data, revision)
        return False  # as when the answer to a stored conditional write is lost

    with monkeypatch.context() as patch:
        patch.setattr(type(registry.storage), "swap", stored_but_refused)
        assert registry.restart_aliases(actor="user:ops") == Restarted(2, None)
    restarts = [e for e in registry.alias_log()["events"] if e["action"] == "restart"]
    assert len(restarts) == 1 and registry.verify() == []


def test_restart_aliases_from_the_cli(tmp_path: Path, make) -> None:
    registry = rolled_back(Registry(tmp_path / "registry", MODEL), make)
    lose(registry, "deleted")
    (tmp_path / "params.yaml").write_text("{}\n")
    runner = CliRunner()
    command = ["--root", str(tmp_path), "models"]
    verify = runner.invoke(app, [*command, "verify"])
    assert verify.exit_code == 1 and "no longer holds alias event" in verify.output
    done = runner.invoke(app, [*command, "restart-aliases", "--comment", "lost", "--actor", "ops"])
    assert done.exit_code == 0, done.output
    assert "no decision up to v2 is replayed" in " ".join(done.output.split())
    assert registry.aliases() == {} and registry.alias_log()["events"][-1]["actor"] == "ops"
    again = runner.invoke(app, [*command, "restart-aliases"])
    assert isinstance(again.exception, RegistryError)
    assert "nothing to restart" in str(again.exception)


def test_an_unsigned_version_is_not_recorded_as_handled_where_signatures_are_required(
    tmp_path: Path, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Host B does not sign; it commits v2 for production and dies before recording it. Host A
    requires signatures: a change it makes must not record v2 as handled with no alias (every
    host, B too, would lose v2's decision); it is refused, naming v2, and B's next change
    records v2 as production."""
    root = tmp_path / "registry"
    key, pub = key_pair(tmp_path)
    a = Registry(root, MODEL, Signing.load(key, [pub], required=False))
    register_candidate(a, make(1, accuracy=0.97), PARAMS, 0.0)
    b = Registry(root, MODEL)
    with monkeypatch.context() as patch:
        patch.setattr(type(b.storage), "swap", lambda *a, **k: False)
        assert register_candidate(b, make(2, accuracy=0.99), PARAMS, 0.0).warning
    requiring = Registry(root, MODEL, Signing.load(key, [pub], required=True))
    with pytest.raises(RegistryError, match=rf"{MODEL} v2 is not signed"):
        requiring.promote(1, "staging")
    assert requiring.aliases() == {"production": 1}  # a reading stops short of v2
    assert json.loads(a.storage.read(f"{MODEL}/aliases.json"))["last_version"] == 1
    b.promote(1, "staging")
    assert b.aliases() == {"production": 2, "staging": 1}


def test_a_version_registered_after_a_legacy_log_names_all_of_it(registry: Registry, make) -> None:
    """An older release's registry (events without hashes, cards naming no trail): a new
    version names the hash of the whole legacy prefix, as the next chained event will."""
    for seed, accuracy in ((1, 0.98), (2, 0.97)):
        register_candidate(registry, make(seed, accuracy=accuracy), PARAMS, 0.0)
    path = writable(model_dir(registry) / "aliases.json")
    document = json.loads(path.read_text())
    legacy = [{k: e[k] for k in LEGACY_FIELDS} for e in document["events"]]
    path.write_text(json.dumps(document | {"events": legacy}))
    without_trail_anchors(registry)
    assert registry.verify() == []
    register_candidate(registry, make(3, accuracy=0.99), PARAMS, 0.0)
    assert registry.card("3")["alias_trail"] == digest(legacy)
    assert registry.verify() == [] and registry.aliases() == {"production": 3, "staging": 2}
    lose(registry, "emptied")
    with pytest.raises(LostAliases, match=rf"{MODEL} v3 was registered"):
        registry.aliases()


def signed_in_turn(tmp_path: Path, make) -> tuple[Path, Path, tuple[Path, Path]]:
    """A registry whose v1 is unsigned (before signing was on) and v2 signed by an old key; its
    root, the old public key and the new key pair."""
    root = tmp_path / "registry"
    old, old_pub = key_pair(tmp_path / "old")
    register_candidate(Registry(root, MODEL), make(1, accuracy=0.96), PARAMS, 0.0)
    old_host = Registry(root, MODEL, Signing.load(old, [old_pub], required=False))
    register_candidate(old_host, make(2, accuracy=0.97), PARAMS, 0.0)
    return root, old_pub, key_pair(tmp_path / "new")


def test_a_version_this_host_cannot_check_neither_hides_the_loss_nor_outlives_a_restart(
    tmp_path: Path, make
) -> None:
    """v1 unsigned (before signing was on), v2 signed by a key since retired, v3 by the new key;
    v3 rolled back, then aliases.json deleted. A host requiring signatures from the new key
    alone stops at v1 when replaying, yet is refused for the loss, not handed an empty map; its
    restart names the events of the cards it cannot check too, so a host that still trusts the
    old key finds nothing lost afterwards."""
    root, old_pub, (new, new_pub) = signed_in_turn(tmp_path, make)
    both = Registry(root, MODEL, Signing.load(new, [old_pub, new_pub], required=False))
    register_candidate(both, make(3, accuracy=0.99), PARAMS, 0.0)
    both.rollback(comment="v3 regressed")
    lose(both, "deleted")
    strict = Registry(root, MODEL, Signing.load(new, [new_pub], required=True))
    for change in (strict.aliases, lambda: strict.promote(3, "staging")):
        with pytest.raises(LostAliases, match=f"the last one when {MODEL} v2 was registered"):
            change()
    assert strict.restart_aliases(comment="lost").newest == 3
    lost_events = strict.alias_log()["events"][-1]["evidence"]["lost"]
    assert len(lost_events) == 2  # the events v2 and v3 were registered after
    assert not [p for p in both.verify() if "no longer holds" in p]
    with pytest.raises(RegistryError, match="nothing to restart"):
        both.restart_aliases()


def test_a_lost_documents_history_is_shown_and_an_unreadable_one_restarted(
    tmp_path: Path, make
) -> None:
    """A truncated aliases.json (zero bytes) cannot be parsed at all: a restart starts from
    nothing. Before it, `models history` shows what is stored, with the reason it is not
    followed, when the document lost events."""
    registry = rolled_back(Registry(tmp_path / "registry", MODEL), make)
    (tmp_path / "params.yaml").write_text("{}\n")
    command = ["--root", str(tmp_path), "models"]
    path = writable(model_dir(registry) / "aliases.json")
    doc = json.loads(path.read_text())
    doc["events"], doc["last_version"] = doc["events"][1:], 0  # lost the event v2 names
    path.write_text(json.dumps(doc))
    shown = CliRunner().invoke(app, [*command, "history", "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout) == doc["events"] != []
    assert "no longer holds alias event" in " ".join(shown.stderr.split())
    lose(registry, "emptied")
    shown = CliRunner().invoke(app, [*command, "history", "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout) == []
    writable(model_dir(registry) / "aliases.json").write_bytes(b"")
    with pytest.raises(RegistryError, match="not readable JSON"):
        registry.aliases()
    done = CliRunner().invoke(app, [*command, "restart-aliases"])
    assert done.exit_code == 0, done.output
    said = " ".join(done.stderr.split())
    assert "no decision up to v2 is replayed" in said
    assert f"kept as aliases-lost/{hashlib.sha256(b'').hexdigest()}.json" in said
    assert registry.aliases() == {} and registry.verify() == []


def test_a_restart_keeps_the_bytes_of_a_document_it_could_not_read(
    registry: Registry, make
) -> None:
    """One field edited by hand makes the whole document unreadable, and a restart drops its
    events: they stay in the store as they were, named by the restart event, out of gc's and
    verify's way."""
    rolled_back(registry, make)
    path = writable(model_dir(registry) / "aliases.json")
    document = json.loads(path.read_text())
    document["events"][0]["version"] = "1"  # a hand edit
    damaged = json.dumps(document).encode()
    path.write_bytes(damaged)
    with pytest.raises(RegistryError):
        registry.aliases()
    done = registry.restart_aliases(comment="hand edit")
    kept = registry.alias_log()["events"][-1]["evidence"]["kept"]
    assert (done.newest, done.kept) == (2, kept)
    assert kept == f"aliases-lost/{hashlib.sha256(damaged).hexdigest()}.json"
    assert (model_dir(registry) / kept).read_bytes() == damaged
    assert registry.verify() == [] and registry.garbage() == []
    assert registry.collect_garbage(min_age_s=0).removed == []
    assert (model_dir(registry) / kept).read_bytes() == damaged


def test_verify_reports_a_lost_document_that_only_cards_it_cannot_check_reveal(
    tmp_path: Path, make
) -> None:
    """Reads refuse on any sealed card's event, checked or not; verify says why they do."""
    root, old_pub, (new, new_pub) = signed_in_turn(tmp_path, make)
    lose(Registry(root, MODEL), "deleted")
    strict = Registry(root, MODEL, Signing.load(new, [new_pub], required=True))
    with pytest.raises(LostAliases):
        strict.aliases()
    assert any(f"when {MODEL} v2 was registered" in p for p in strict.verify())


def test_a_restart_event_edited_by_hand_is_reported_not_a_crash(registry: Registry, make) -> None:
    """Without trusted keys nothing stops an edit of the stored log: verify reports the broken
    chain, and a `lost` list that is no list is ignored rather than iterated."""
    rolled_back(registry, make)
    lose(registry, "deleted")
    registry.restart_aliases()
    path = writable(model_dir(registry) / "aliases.json")
    document = json.loads(path.read_text())
    document["events"][-1]["evidence"]["lost"] = 5
    path.write_text(json.dumps(document))
    problems = registry.verify()
    assert any("alias event 1 was edited" in p for p in problems)
    assert any("no longer holds alias event" in p for p in problems)  # its list no longer names
