"""The audit trail: who moved an alias, when, why and on what evidence, in a tamper-evident log."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest

from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.core.text import printable
from mnist_pipeline.pipeline import announce
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import Registry
from mnist_pipeline.registry.signing import Signing
from mnist_pipeline.registry.trail import HASH_KEY, digest
from tests.registry_helpers import (
    MODEL,
    PARAMS,
    key_pair,
    model_dir,
    without_trail_anchors,
    writable,
)


def aliases_file(registry: Registry) -> Path:
    return writable(model_dir(registry) / "aliases.json")


def rewrite_events(registry: Registry, change) -> None:
    """Edit the stored event log as anyone with write access could."""
    path = aliases_file(registry)
    document = json.loads(path.read_text())
    document["events"] = change(document["events"])
    path.write_text(json.dumps(document, indent=2))


def moved(registry: Registry, make) -> Registry:
    """Three registrations, a commented promote by a named actor, a rollback by default."""
    for seed, accuracy in ((1, 0.98), (2, 0.99), (3, 0.97)):
        register_candidate(registry, make(seed, accuracy=accuracy), PARAMS, 0.0)
    registry.promote(3, "production", actor="user:alice", comment="better on the new inbox")
    registry.rollback(comment="alice's pick regressed")
    return registry


def test_every_move_records_who_why_and_evidence_in_an_intact_chain(
    registry: Registry, make
) -> None:
    events = moved(registry, make).alias_log()["events"]
    assert [(e["action"], e["alias"], e["version"], e["previous"]) for e in events] == [
        ("register", "production", 1, None),
        ("register", "production", 2, 1),
        ("register", "staging", 3, None),
        ("promote", "production", 3, 2),
        ("rollback", "production", 2, 3),
    ]
    me = f"user:{getpass.getuser()}"
    assert [e["actor"] for e in events] == [me, me, me, "user:alice", me]
    # A registration's evidence is its decision's (the card's decision less alias, reason,
    # champion); a manual move's is the comment.
    card_decision = registry.card("2")["decision"]
    assert events[1]["evidence"] == {
        k: v for k, v in card_decision.items() if k not in ("alias", "reason", "champion")
    }
    assert events[1]["evidence"] and "replayed" not in events[1]["evidence"]
    assert events[3]["evidence"] == {"comment": "better on the new inbox"}
    assert events[4]["evidence"] == {"comment": "alice's pick regressed"}
    assert events[0]["prev_sha256"] is None
    for before, event in zip(events, events[1:], strict=False):
        assert event["prev_sha256"] == before[HASH_KEY] == digest(before)
    assert registry.verify() == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda ev: [*ev[:2], {**ev[2], "actor": "user:mallory"}, *ev[3:]], "event 3 was edited"),
        (  # edited and rehashed: the next event no longer follows it
            lambda ev: [*ev[:2], rehashed({**ev[2], "reason": "x"}), *ev[3:]],
            "event 4 does not follow",
        ),
        (lambda ev: [ev[0], ev[2], ev[1], *ev[3:]], "event 2 does not follow"),  # reordered
        (lambda ev: [*ev[:2], *ev[3:]], "event 3 does not follow"),  # one removed midway
        (  # a hash stripped inside the chain
            lambda ev: [ev[0], {k: v for k, v in ev[1].items() if k != HASH_KEY}, *ev[2:]],
            "event 2 has no hash inside the chain",
        ),
    ],
    ids=["edited", "edited-rehashed", "reordered", "removed", "stripped"],
)
def test_verify_reports_a_tampered_history(registry: Registry, make, change, expected) -> None:
    moved(registry, make)
    rewrite_events(registry, change)
    problems = registry.verify()
    assert any(expected in p for p in problems), problems


def rehashed(event: dict) -> dict:
    return {**event, HASH_KEY: digest(event)}


LEGACY_FIELDS = ("time", "action", "alias", "version", "previous", "reason")


def as_legacy(events: list[dict]) -> list[dict]:
    """Events as the registry wrote them before they were chained."""
    return [{k: e[k] for k in LEGACY_FIELDS} for e in events]


def test_a_legacy_log_without_hashes_loads_and_the_chain_covers_all_of_it(
    registry: Registry, make
) -> None:
    for seed, accuracy in ((1, 0.98), (2, 0.97)):
        register_candidate(registry, make(seed, accuracy=accuracy), PARAMS, 0.0)
    rewrite_events(registry, as_legacy)
    without_trail_anchors(registry)  # as the cards of that release were
    assert registry.verify() == []  # as the registry wrote it before events were chained
    registry.promote(2, "production", comment="try the newer one")
    events = registry.alias_log()["events"]
    assert HASH_KEY not in events[1] and events[2]["prev_sha256"] == digest(events[:2])
    assert registry.verify() == []
    for edited in (0, 1):  # the first legacy event is covered as well as the last
        rewrite_events(
            registry,
            lambda ev, i=edited: [
                {**e, "reason": "edited"} if j == i else e for j, e in enumerate(ev)
            ],
        )
        assert any("event 3 does not follow" in p for p in registry.verify())
        rewrite_events(registry, lambda ev: events)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (  # every hash and signature removed: not a legacy log
            lambda ev: [
                {k: v for k, v in e.items() if k not in (HASH_KEY, "signature")} for e in ev
            ],
            [
                f"alias event {n} has no hash but a chained event's fields (stripped)"
                for n in range(1, 6)
            ],
        ),
        (  # the first two stripped, so that the first could be rewritten
            lambda ev: (
                [
                    {k: v for k, v in e.items() if k not in (HASH_KEY, "signature")}
                    | ({"actor": "user:mallory"} if i == 0 else {})
                    for i, e in enumerate(ev[:2])
                ]
                + ev[2:]
            ),
            [
                *(
                    f"alias event {n} has no hash but a chained event's fields (stripped)"
                    for n in (1, 2)
                ),
                "alias event 3 does not follow the event before it (the history was rewritten, "
                "reordered, or events were removed)",
            ],
        ),
        (  # the first two made to look legacy: the third no longer follows what precedes it
            lambda ev: as_legacy(ev[:2]) + ev[2:],
            [
                "alias event 3 does not follow the event before it (the history was rewritten, "
                "reordered, or events were removed)"
            ],
        ),
    ],
    ids=["all-stripped", "prefix-stripped", "prefix-made-legacy"],
)
def test_a_chained_log_cannot_pass_as_a_legacy_one(
    registry: Registry, make, change, expected
) -> None:
    moved(registry, make)
    without_trail_anchors(registry)  # cards that would also say which events were lost
    rewrite_events(registry, change)
    assert registry.verify() == expected


def test_require_signature_refuses_a_legacy_prefix_until_a_signed_move_covers_it(
    tmp_path: Path, make
) -> None:
    key, pub = key_pair(tmp_path / "keys")
    root = tmp_path / "registry"
    signer = Registry(root, MODEL, Signing.load(key, [pub], True))
    moved(signer, make)
    without_trail_anchors(signer)  # as the cards of the release that wrote a legacy log were
    rewrite_events(signer, as_legacy)  # also what rewriting the whole log as legacy looks like
    unvouched = (
        "alias events 1-5 are not signed (registry.require_signature): they predate chained "
        "events, and no signed event after them vouches for them yet: with require_signature "
        "off, make one move with the signing key"
    )
    [problem] = signer.verify()
    assert problem.startswith(unvouched), problem
    for read in (lambda: signer.version_of("production"), lambda: signer.promote(1, "staging")):
        with pytest.raises(RegistryError, match="alias events 1-5 are not signed"):
            read()  # reads and moves alike follow no unvouched legacy log
    assert signer.card("2")["version"] == 2  # versions by number stay readable
    migrating = Registry(root, MODEL, Signing.load(key, [pub], False))
    assert migrating.verify() == []
    migrating.promote("production", "production", comment="vouch for the legacy log")
    assert signer.verify() == [] and signer.version_of("production") == 2
    rewrite_events(signer, lambda ev: [{**ev[0], "reason": "edited"}, *ev[1:]])
    assert any("event 6 does not follow" in p for p in signer.verify())


def test_a_log_forged_as_legacy_events_is_not_followed_under_require_signature(
    tmp_path: Path, make
) -> None:
    key, pub = key_pair(tmp_path / "keys")
    signer = Registry(tmp_path / "registry", MODEL, Signing.load(key, [pub], True))
    moved(signer, make)
    assert signer.version_of("production") == 2
    path = aliases_file(signer)
    document = json.loads(path.read_text())
    first = as_legacy(document["events"])[0]  # "register production -> v1", unsigned
    path.write_text(
        json.dumps({**document, "aliases": {"production": 1}, "history": {}, "events": [first]})
    )
    with pytest.raises(RegistryError, match="alias events 1-1 are not signed"):
        signer.version_of("production")
    with pytest.raises(RegistryError, match="alias events 1-1 are not signed"):
        signer.promote(3, "staging")  # no signed move vouches for the forgery either


def test_a_rewritten_and_rehashed_history_fails_only_its_signatures(tmp_path: Path, make) -> None:
    key, pub = key_pair(tmp_path / "keys")
    root = tmp_path / "registry"
    signed = Registry(root, MODEL, Signing.load(key, [pub], False))
    events = moved(signed, make).alias_log()["events"]
    assert all("signature" in e for e in events)
    assert signed.verify() == []

    def forge(events: list[dict]) -> list[dict]:  # blame bob, then fix every hash after it
        forged, before = [], None
        for event in events:
            if event["actor"] == "user:alice":
                event = {**event, "actor": "user:bob"}
            event = {**event, "prev_sha256": before and before[HASH_KEY]}
            forged.append(before := rehashed(event))
        return forged

    rewrite_events(signed, forge)
    assert Registry(root, MODEL).verify() == []  # the chain alone cannot tell
    # The edited event, and the next one whose link to it changed, no longer match their
    # signatures; the events before are untouched.
    bad = "the signature does not match the event (forged or edited)"
    assert signed.verify() == [f"alias event 4: {bad}", f"alias event 5: {bad}"]
    # Dropping the signatures instead: refused where every event must be signed.
    rewrite_events(
        signed, lambda ev: [{k: v for k, v in e.items() if k != "signature"} for e in ev]
    )
    assert Registry(root, MODEL, Signing.load(None, [pub], False)).verify() == []
    strict = Registry(root, MODEL, Signing.load(None, [pub], True)).verify()
    assert strict == [next(p for p in strict if p.startswith("alias events 1-5 are not signed"))]


def test_a_move_retried_after_a_conflict_is_chained_to_what_won(
    registry: Registry, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    for seed, accuracy in ((1, 0.98), (2, 0.97)):
        register_candidate(registry, make(seed, accuracy=accuracy), PARAMS, 0.0)
    other = Registry(registry.root, MODEL)
    swap = registry.storage.swap
    raced = []

    def racing_swap(key: str, data: bytes, revision: str | None) -> bool:
        if not raced:  # another writer moves an alias between this one's read and its swap
            raced.append(other.promote(2, "canary", actor="user:other"))
        return swap(key, data, revision)

    monkeypatch.setattr(registry.storage, "swap", racing_swap)
    registry.promote(2, "production", actor="user:me")
    events = registry.alias_log()["events"]
    assert [(e["alias"], e["actor"]) for e in events[-2:]] == [
        ("canary", "user:other"),
        ("production", "user:me"),
    ]
    assert registry.verify() == []


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: d.update(history={"production": 1}), "history.production must be a list"),
        (lambda d: d.update(aliases={"production": [1]}), "aliases.production must be a version"),
        (lambda d: d.update(aliases={"production": True}), "aliases.production must be a version"),
        (lambda d: d["events"].append("promote"), "alias event 6 must be a JSON object"),
        (lambda d: d["events"][3].update(evidence="x"), "alias event 4 must be a JSON object"),
        # `models history` gathered aliases in a set: a list there was a TypeError traceback
        (lambda d: d["events"][1].update(alias=["x"]), "event 2's 'alias' must be text, got"),
        (lambda d: d["events"][0].update(version="2"), "event 1's 'version' must be an integer"),
        (lambda d: d["events"][2].update(previous=True), "event 3's 'previous' must be an int"),
    ],
    ids=[
        "history-scalar",
        "alias-list",
        "alias-bool",
        "event-string",
        "evidence-string",
        "event-alias-list",
        "event-version-text",
        "event-previous-bool",
    ],
)
def test_an_alias_document_of_another_shape_is_refused_by_name(
    registry: Registry, make, edit, problem: str
) -> None:
    moved(registry, make)
    path = aliases_file(registry)
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))
    for read in (registry.aliases, registry.alias_log, lambda: registry.promote(1, "staging")):
        with pytest.raises(RegistryError, match=problem):
            read()
    [reported] = registry.verify()
    assert problem in reported and "aliases.json" in reported


def test_stored_text_is_shown_with_its_control_characters_escaped() -> None:
    """An actor or comment stored before they were refused shows as one line, with no escape
    sequence reaching the terminal."""
    assert printable("line1\nline2\x1b[31m\x9b") == "line1\\nline2\\x1b[31m\\x9b"
    assert printable("geprüft ✓") == "geprüft ✓"
    assert printable("a\u202eb\u2028c\u061cd") == "a\\u202eb\\u2028c\\u061cd"  # reorders, breaks


def test_a_registration_by_an_actor_the_trail_refuses_stores_nothing(
    tmp_path: Path, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before the version is written: no version without its event, no alias set
    without one (the replay of its decision would have taken the refusal for a bad card)."""
    registry = Registry(tmp_path / "reg", MODEL)
    register_candidate(registry, make(1, accuracy=0.98), PARAMS, 0.0)
    before, stored = registry.alias_log(), registry.storage.list(f"{MODEL}/")
    monkeypatch.setattr(announce, "current_actor", lambda: "user:a\nb")
    with pytest.raises(RegistryError, match=r"the actor holds a control character"):
        register_candidate(registry, make(2, accuracy=0.99), PARAMS, 0.0)
    assert [card["version"] for card in registry.versions()] == [1]
    assert registry.alias_log() == before and registry.verify() == []
    assert registry.storage.list(f"{MODEL}/") == stored and registry.garbage() == []  # no blob


def test_the_actor_a_flow_run_is_named_by_is_kept_to_one_short_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Prefect does not limit a run's name: what the trail records of it fits the trail."""
    name = "nightly\nretrain-" + "x" * 300
    monkeypatch.setattr(announce, "_flow_run_name", lambda: name)
    actor = announce.current_actor()
    assert actor.startswith("prefect:nightly\\nretrain-xxx") and len(actor) == 200
