"""`models verify`'s audit of the alias map: every alias must be where its audit trail's moves
lead, and with trusted keys reads refuse an alias map that is not."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import Registry, UntrustedAliases
from mnist_pipeline.registry.signing import Signing
from mnist_pipeline.registry.trail import mismatches, replay
from tests.registry_helpers import MODEL, PARAMS, key_pair, model_dir, writable


def edit_aliases(registry: Registry, change) -> None:
    """Edit aliases.json's map as anyone with write access could, adding no event."""
    path = writable(model_dir(registry) / "aliases.json")
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document, indent=2))


def history_of_moves(registry: Registry, make) -> Registry:
    """v1, v2 production in turn, v3 staging; v3 proposed and rejected; a promote, a rollback."""
    for seed, accuracy in ((1, 0.98), (2, 0.99), (3, 0.97)):
        register_candidate(registry, make(seed, accuracy=accuracy), PARAMS, 0.0)
    registry.note(3, "production", "reject", "rejected by a reviewer", actor="user:bob")
    registry.promote(1, "canary", comment="shadow traffic")
    registry.promote(3, "canary")
    registry.rollback("canary")
    return registry


def test_the_trail_replays_to_the_alias_map_it_was_written_with(registry: Registry, make) -> None:
    state = history_of_moves(registry, make).alias_log()
    assert replay(state["events"]) == (state["aliases"], state["history"])
    assert state["aliases"] == {"canary": 1, "production": 2, "staging": 3}
    assert mismatches(state["events"], state["aliases"], state["history"]) == []
    assert registry.verify() == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (  # back to an old version, history too, as a rollback would leave it
            lambda doc: doc.update(
                aliases={**doc["aliases"], "production": 1},
                history={**doc["history"], "production": [1]},
            ),
            "alias 'production' points at v1 but its audit trail's last move is to v2",
        ),
        (  # the version a reviewer rejected
            lambda doc: doc["aliases"].update(production=3),
            "alias 'production' points at v3 but its audit trail's last move is to v2",
        ),
        (  # an alias no event ever set
            lambda doc: doc["aliases"].update(blue=2),
            "alias 'blue' points at v2 but its audit trail's last move is to nothing",
        ),
        (  # an alias removed
            lambda doc: doc["aliases"].pop("canary"),
            "alias 'canary' points at nothing but its audit trail's last move is to v1",
        ),
        (  # the history a rollback would follow
            lambda doc: doc["history"].update(canary=[3, 1]),
            "alias 'canary' has history [3, 1] but its audit trail's moves give [1]",
        ),
    ],
    ids=["old-version", "rejected-version", "new-alias", "removed-alias", "history"],
)
def test_verify_reports_an_alias_moved_without_an_event(
    registry: Registry, make, change, expected
) -> None:
    history_of_moves(registry, make)
    edit_aliases(registry, change)
    problems = registry.verify()
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_a_move_from_an_alias_set_without_an_event_keeps_it_reported(
    registry: Registry, make
) -> None:
    """The move replaces the map that showed the edit; its event's `previous` still does
    (a promote from v1, where the trail's moves had left production at v2), so `models verify`
    goes on reporting it, and a rollback after it does not hide it either."""
    history_of_moves(registry, make)
    edit_aliases(registry, lambda doc: doc["aliases"].update(production=1))
    assert registry.promote(3, "production") == 1
    expected = (
        "alias event 8 moved 'production' from v1, but the audit trail's moves before it had "
        "left it at v2 (set without an event; if that was intended: `models acknowledge 8`)"
    )
    assert registry.verify() == [expected]
    registry.rollback()
    assert registry.verify() == [expected]


def test_an_acknowledged_move_from_an_alias_set_by_hand_is_no_longer_reported(
    registry: Registry, make
) -> None:
    """The trail cannot be edited, so a person vouches for the move instead: an `acknowledge`
    event naming its hash, which moves nothing; a later hand edit is reported again."""
    history_of_moves(registry, make)
    edit_aliases(registry, lambda doc: doc["aliases"].update(production=1))
    registry.promote(3, "production")
    before = registry.alias_log()
    moved = registry.acknowledge(8, "v1 restored by hand during an outage", actor="user:ops")
    assert moved == before["events"][7] and moved["previous"] == 1
    assert registry.verify() == []
    after = registry.alias_log()
    assert after["aliases"] == before["aliases"] and after["history"] == before["history"]
    event = after["events"][-1]
    assert (event["action"], event["alias"], event["version"], event["actor"]) == (
        "acknowledge",
        "production",
        3,
        "user:ops",
    )
    assert event["evidence"] == {
        "comment": "v1 restored by hand during an outage",
        "acknowledges": moved["sha256"],
    }
    # another edit and a move from it: only that one is reported
    edit_aliases(registry, lambda doc: doc["aliases"].update(production=2))
    registry.promote(1, "production")
    assert [p.split(",")[0] for p in registry.verify()] == [
        "alias event 10 moved 'production' from v2"
    ]


def test_only_a_reported_move_can_be_acknowledged(registry: Registry, make) -> None:
    history_of_moves(registry, make)
    edit_aliases(registry, lambda doc: doc["aliases"].update(production=1))
    registry.promote(3, "production")
    events = len(registry.alias_log()["events"])
    with pytest.raises(RegistryError, match="alias event 7 of .* is not a move from an alias se"):
        registry.acknowledge(7, "looks fine")  # the rollback before it: nothing to vouch for
    with pytest.raises(RegistryError, match=f"has no alias event 99 \\(its trail holds {events}"):
        registry.acknowledge(99, "looks fine")
    with pytest.raises(RegistryError, match="needs a --comment saying why"):
        registry.acknowledge(8, "  ")
    with pytest.raises(RegistryError, match="recorded by `acknowledge`, not as a note"):
        registry.note(3, "production", "acknowledge", "by hand")
    unhashed = registry.alias_log()["events"][7]
    edit_aliases(registry, lambda doc: doc["events"][7].pop("sha256"))  # as if never chained
    with pytest.raises(RegistryError, match="alias event 8 of .* has no hash to name"):
        registry.acknowledge(8, "looks fine")
    edit_aliases(registry, lambda doc: doc["events"][7].update(sha256=unhashed["sha256"]))
    assert len(registry.alias_log()["events"]) == events  # nothing recorded
    assert len(registry.verify()) == 1


def test_models_acknowledge_on_the_command_line(
    tmp_path: Path, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # usage errors' box on one line
    registry = history_of_moves(Registry(tmp_path / "registry", MODEL), make)
    edit_aliases(registry, lambda doc: doc["aliases"].update(production=1))
    registry.promote(3, "production")
    project = {"registry": {"root": str(tmp_path / "registry"), "model_name": MODEL}}
    (tmp_path / "params.yaml").write_text(json.dumps(project))
    cli = ["--root", str(tmp_path), "models"]
    checked = CliRunner().invoke(app, [*cli, "verify"])
    assert checked.exit_code != 0 and "`models acknowledge 8`" in checked.output, checked.output
    unexplained = CliRunner().invoke(app, [*cli, "acknowledge", "8"])
    assert unexplained.exit_code == 2 and "--comment" in unexplained.output
    blank = CliRunner().invoke(app, [*cli, "acknowledge", "8", "--comment", " "])
    assert blank.exit_code == 2 and "needs a --comment saying why" in blank.output, blank.output
    done = CliRunner().invoke(app, [*cli, "acknowledge", "8", "--comment", "restored by hand"])
    assert done.exit_code == 0, done.output
    assert "alias event 8 (promote of 'production' to v3) acknowledged" in done.output
    assert CliRunner().invoke(app, [*cli, "verify"]).exit_code == 0
    again = CliRunner().invoke(app, [*cli, "acknowledge", "8", "--comment", "twice"])
    assert again.exit_code != 0 and "nothing to acknowledge" in str(again.exception)


def test_with_trusted_keys_reads_refuse_an_alias_moved_without_an_event(
    tmp_path: Path, make
) -> None:
    key, pub = key_pair(tmp_path / "keys")
    root = tmp_path / "registry"
    signed = history_of_moves(Registry(root, MODEL, Signing.load(key, [pub], False)), make)
    assert signed.aliases()["production"] == 2
    edit_aliases(signed, lambda doc: doc["aliases"].update(production=3))
    reader = Registry(root, MODEL, Signing.load(None, [pub], False))
    for read in (reader.aliases, lambda: reader.fetch("production", "model.onnx")):
        with pytest.raises(RegistryError, match="alias 'production' points at v3 but its audit"):
            read()
    with pytest.raises(RegistryError, match="refusing the aliases"):  # nor moved on top of it
        signed.promote(1, "canary")
    assert reader.card("1")["version"] == 1  # versions by number stay readable
    # Without trusted keys the map is followed (verify still reports it).
    assert Registry(root, MODEL).aliases()["production"] == 3
    # The trail itself, which shows how to repair the map, can still be read, unchecked:
    with pytest.raises(UntrustedAliases):
        reader.alias_log()
    stored = reader.alias_log(checked=False)
    assert stored == Registry(root, MODEL).alias_log() and stored["aliases"]["production"] == 3
    project = {"registry": {"root": str(root), "model_name": MODEL, "trusted_keys": [str(pub)]}}
    (tmp_path / "params.yaml").write_text(json.dumps(project))
    shown = CliRunner().invoke(app, ["--root", str(tmp_path), "models", "history", "--json"])
    assert shown.exit_code == 0, shown.output
    assert "warning: refusing the aliases of" in shown.stderr and "unchecked" in shown.stderr
    assert json.loads(shown.stdout) == stored["events"]


@pytest.mark.parametrize("action", ["promote", "register", "rollback"])
def test_a_note_cannot_record_a_move_that_did_not_happen(
    registry: Registry, make, action: str
) -> None:
    register_candidate(registry, make(1, accuracy=0.98), PARAMS, 0.0)
    register_candidate(registry, make(2, accuracy=0.97), PARAMS, 0.0)
    before = registry.alias_log()
    with pytest.raises(RegistryError, match=f"'{action}' moves an alias"):
        registry.note(2, "production", action, "noted, not moved")
    assert registry.alias_log() == before and registry.verify() == []


def test_a_log_copied_from_another_model_is_refused(tmp_path: Path, make) -> None:
    """One key signs two models: each event names its model, hashed and signed with it, so a
    signed `aliases.json` copied from one model over the other's no longer verifies."""
    key, pub = key_pair(tmp_path / "keys")
    root, signing = tmp_path / "registry", Signing.load(key, [pub], False)
    first, second = Registry(root, "digits-a", signing), Registry(root, "digits-b", signing)
    register_candidate(first, make(1, accuracy=0.98), PARAMS, 0.0)
    register_candidate(second, make(2, accuracy=0.98), PARAMS, 0.0)
    assert [e["model"] for e in second.alias_log()["events"]] == ["digits-b"]
    assert second.verify() == [] and second.aliases() == {"production": 1}
    copied = (model_dir(first) / "aliases.json").read_bytes()
    writable(model_dir(second) / "aliases.json").write_bytes(copied)
    problem = "alias event 1 belongs to model 'digits-a', not 'digits-b' (a log copied from"
    assert any(problem in found for found in second.verify())
    with pytest.raises(UntrustedAliases, match=re.escape(problem)):
        Registry(root, "digits-b", Signing.load(None, [pub], False)).aliases()
    assert Registry(root, "digits-a", Signing.load(None, [pub], False)).aliases() == {
        "production": 1
    }


def test_a_store_that_stops_answering_during_verify_fails_it_once(tmp_path: Path, make) -> None:
    """The cards were read, then no file read is answered (a store that stopped): verify fails
    in one error, not one per version each waiting for the store in turn; a file the store
    refuses on its own is still that version's problem."""
    from mnist_pipeline.core.errors import StoreError
    from mnist_pipeline.pipeline.register import verify

    registry = Registry(tmp_path / "registry", MODEL)
    for number in (1, 2, 3):
        register_candidate(registry, make(number, accuracy=0.97), PARAMS)
    read, asked = registry.storage.read, []

    def stopped(key: str) -> bytes | None:
        if key.endswith("card.json"):
            return read(key)
        asked.append(key)
        raise StoreError("registry at http://store: cannot read: Read timeout", whole_store=True)

    registry.storage.read = stopped  # type: ignore[method-assign]
    for check in (registry.verify, lambda: verify(registry)):
        asked.clear()
        with pytest.raises(StoreError, match="Read timeout"):
            check()
        assert len(asked) == 1

    def one_refused(key: str) -> bytes | None:
        if "/blobs/" in key and not asked:
            asked.append(key)
            raise StoreError(f"registry at http://store: access denied: cannot read {key!r}")
        return read(key)

    asked.clear()
    registry.storage.read = one_refused  # type: ignore[method-assign]
    problems = registry.verify()
    assert len(problems) == 1 and "access denied" in problems[0], problems
