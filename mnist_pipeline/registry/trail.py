"""The audit trail: the alias document's event log as a hash chain, optionally signed.

Every alias move appends an event saying what moved (action, alias, version, previous), who
moved it (`actor`), when, why (`reason`, and the mover's `evidence`: the decision's evidence
of a registration, the comment of a manual move). Each event carries `prev_sha256`, the SHA-256
of the event before it (None for the first), and `sha256`, the SHA-256 of its own canonical
JSON without `sha256` and `signature`; with a signing key it also carries an Ed25519
`signature` over the same bytes plus `sha256` (signing.py, as cards are signed). An edited,
reordered, or removed-in-the-middle event breaks the chain; a whole log rewritten and rehashed
is caught only by the signatures (`registry.trusted_keys`). The alias map must be what the
log's moves lead to (`mismatches`): an alias set without an event is caught like an edit.

Events written before the log was chained are a legacy prefix: at the start of the log, with
none of the fields chaining added (`CHAINED_FIELDS`). The first chained event's `prev_sha256`
is the SHA-256 of the whole prefix (a JSON list), so every later event covers it, and a signed
one vouches for it under `registry.require_signature`. Registry code imports nothing of
Prefect: callers say who the actor is; without one it is the local user.
"""

from __future__ import annotations

import getpass
import hashlib
from collections.abc import Callable
from typing import Any

from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.core.text import printable
from mnist_pipeline.registry.card import SIGNATURE_KEY, canonical
from mnist_pipeline.registry.signing import Signing, UntrustedKey

HASH_KEY = "sha256"
PREV_KEY = "prev_sha256"
MODEL_KEY = "model"  # the model whose log holds the event (events written before it: none)
CHAINED_FIELDS = (HASH_KEY, PREV_KEY, SIGNATURE_KEY, MODEL_KEY, "actor", "evidence")  # not legacy
_VOUCH = (
    "with require_signature off, make one move with the signing key (register a version, or "
    "`models promote` one), then turn it on"
)
MOVES = ("register", "promote")  # point an alias at a version; "rollback" pops its history
RESTART = "restart"  # every alias and history cleared (an alias document that lost events)
# a person vouches for a move from an alias set by hand (`unexplained`): its hash in evidence
ACKNOWLEDGE, ACKNOWLEDGES = "acknowledge", "acknowledges"
Signer = Callable[[dict[str, Any]], dict[str, str] | None]


def default_actor() -> str:
    """`user:<login name>` of this process ("user:unknown" when it has none)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no USER/LOGNAME and no passwd entry (some containers)
        return "user:unknown"
    # a login name that is not UTF-8 (or holds a control character): escaped, not stored as is
    return "user:" + printable(name)


def digest(event: Any) -> str:
    """The SHA-256 of an event's canonical JSON without its own hash and signature."""
    if isinstance(event, dict):
        event = {k: v for k, v in event.items() if k not in (HASH_KEY, SIGNATURE_KEY)}
    return hashlib.sha256(canonical(event)).hexdigest()


def link(before: list[Any]) -> str | None:
    """What the `prev_sha256` of the event after `before` must be (None: the first event)."""
    if not before:
        return None
    last = before[-1]
    if isinstance(last, dict) and isinstance(last.get(HASH_KEY), str):
        return str(last[HASH_KEY])
    return digest(list(before))  # after the legacy prefix: all of it


def chained(events: list[Any], event: dict[str, Any], sign: Signer | None) -> dict[str, Any]:
    """`event` made the next link after `events`: its predecessor's hash, its own, a signature."""
    linked = {**event, PREV_KEY: link(events)}
    linked[HASH_KEY] = digest(linked)
    signature = sign(linked) if sign is not None else None
    if signature is not None:
        linked[SIGNATURE_KEY] = signature
    return linked


def check(events: list[Any], signing: Signing, model: str | None = None) -> list[str]:
    """Every break of the chain, every event naming another model than `model` (a log copied
    from another model's: the name is hashed and signed with the event), and, with trusted
    keys, every bad or missing signature (with `require_signature`, a legacy prefix no signed
    event vouches for).
    Unsigned events before the first signed one (written before signing was turned on) are
    vouched for by that signed event, whose chain covers their content; with none after them
    they are one problem. So are events signed by a key no longer trusted (retired after a
    rotation): a later event signed by a trusted key covers them; the last ones, with none
    after them, are refused (what a retired, perhaps stolen, key could still append)."""
    problems: list[str] = []
    legacy, started, vouched, unsigned = 0, False, False, []  # unsigned: their numbers
    retired: list[str] = []  # signed by a key not trusted (any more), no trusted event after
    for index, event in enumerate(events):
        label = f"alias event {index + 1}"
        if not isinstance(event, dict):
            problems.append(f"{label} is not a JSON object")
            continue
        if HASH_KEY not in event:
            if started:
                problems.append(f"{label} has no hash inside the chain (inserted or stripped)")
            elif any(key in event for key in CHAINED_FIELDS):
                problems.append(f"{label} has no hash but a chained event's fields (stripped)")
            else:
                legacy += 1
            continue
        started = True
        if event[HASH_KEY] != digest(event):
            problems.append(f"{label} was edited (its sha256 does not match its content)")
        if model is not None and event.get(MODEL_KEY, model) != model:
            problems.append(
                f"{label} belongs to model {event[MODEL_KEY]!r}, not {model!r} (a log copied "
                "from another model's)"
            )
        if event.get(PREV_KEY) != link(events[:index]):
            problems.append(
                f"{label} does not follow the event before it (the history was rewritten, "
                "reordered, or events were removed)"
            )
        if (
            event.get(SIGNATURE_KEY) is None
            and not vouched
            and signing.required
            and signing.trusted
        ):
            unsigned.append(index + 1)  # before any signed event: the first one vouches
            continue
        try:
            signing.check(event, event.get(SIGNATURE_KEY), label, "the event")
        except UntrustedKey as exc:  # a retired key's: covered if a trusted event follows
            retired.append(str(exc))
            continue
        except RegistryError as exc:
            problems.append(str(exc))
            continue
        if event.get(SIGNATURE_KEY) is not None and signing.trusted:
            vouched, retired = True, []  # its chain covers every event before it
    problems += retired  # the last events, signed by a key not trusted: nothing vouches
    if legacy and signing.required and signing.trusted and not vouched:
        problems.append(
            f"alias events 1-{legacy} are not signed (registry.require_signature): they predate "
            f"chained events, and no signed event after them vouches for them yet: {_VOUCH}"
        )
    if unsigned and not vouched:
        first, last = unsigned[0], unsigned[-1]
        contiguous = unsigned == list(range(first, last + 1))
        span = f"{first}-{last}" if contiguous else ", ".join(map(str, unsigned))
        which = f"event {first} is" if len(unsigned) == 1 else f"events {span} are"
        problems.append(
            f"alias {which} not signed (registry.require_signature), and no signed event "
            f"vouches for the log yet: {_VOUCH}"
        )
    return problems


def replay(events: list[Any]) -> tuple[dict[str, int], dict[str, list[int]]]:
    """The aliases and alias histories the log's moves lead to (a restart clears them; other
    actions move nothing)."""
    aliases: dict[str, int] = {}
    history: dict[str, list[int]] = {}
    for event in events:
        _apply(event, aliases, history)
    return aliases, history


def _apply(event: Any, aliases: dict[str, int], history: dict[str, list[int]]) -> None:
    """One event of the log applied to the aliases and histories replayed so far."""
    if not isinstance(event, dict):
        return
    if event.get("action") == RESTART:
        aliases.clear()
        history.clear()
        return
    alias, version = event.get("alias"), event.get("version")
    if not isinstance(alias, str) or not isinstance(version, int):
        return
    action = event.get("action")
    if action == "rollback":
        if history.get(alias):
            history[alias].pop()
    elif action in MOVES:
        if aliases.get(alias) == version:
            return
        history.setdefault(alias, []).append(version)
    else:
        return
    aliases[alias] = version


def mismatches(
    events: list[Any], aliases: dict[str, int], history: dict[str, list[int]]
) -> list[str]:
    """Every alias whose current version or history is not what the log's moves lead to."""
    moved, moves = replay(events)
    problems = []
    for alias in sorted({*aliases, *history, *moved, *moves}):
        held, led = aliases.get(alias), moved.get(alias)
        if held != led:
            problems.append(
                f"alias {alias!r} points at {_v(held)} but its audit trail's last move is to "
                f"{_v(led)} (set without an event)"
            )
        elif history.get(alias, []) != moves.get(alias, []):
            problems.append(
                f"alias {alias!r} has history {history.get(alias, [])} but its audit trail's "
                f"moves give {moves.get(alias, [])}"
            )
    return problems


def unexplained_starts(events: list[Any]) -> list[str]:
    """A problem per move whose recorded `previous` is not where the log's moves before it had
    left the alias: the alias was set without an event, and a move since hid it from
    `mismatches` (an event without `previous`, as the oldest logs have, is not judged). A move
    a later `acknowledge` event names by its hash is not reported again."""
    return list(unexplained(events).values())


def unexplained(events: list[Any]) -> dict[int, str]:
    """`unexplained_starts` by event number (from 1), acknowledged ones left out."""
    acknowledged = {
        event["evidence"].get(ACKNOWLEDGES)
        for event in events
        if isinstance(event, dict)
        and event.get("action") == ACKNOWLEDGE
        and isinstance(event.get("evidence"), dict)
        and isinstance(event["evidence"].get(ACKNOWLEDGES), str)
    }
    problems = {}
    aliases: dict[str, int] = {}
    history: dict[str, list[int]] = {}
    for number, event in enumerate(events, 1):
        if isinstance(event, dict) and event.get("action") in (*MOVES, "rollback"):
            alias, previous = event.get("alias"), event.get("previous", "absent")
            led = aliases.get(alias) if isinstance(alias, str) else None
            vouched = isinstance(event.get(HASH_KEY), str) and event[HASH_KEY] in acknowledged
            if isinstance(alias, str) and previous not in ("absent", led) and not vouched:
                problems[number] = (
                    f"alias event {number} moved {alias!r} from {_v(previous)}, but the audit "
                    f"trail's moves before it had left it at {_v(led)} (set without an event; "
                    f"if that was intended: `models acknowledge {number}`)"
                )
        _apply(event, aliases, history)
    return problems


def unrecorded(events: list[Any], last_version: int) -> list[str]:
    """A problem when the log registered a version past `last_version`: that number, outside
    the chain and its signatures, lowered by hand would have every reader replay those
    versions' decisions again, undoing the moves made since (a rollback, say)."""
    registered = [
        e["version"]
        for e in events
        if isinstance(e, dict)
        and e.get("action") == "register"
        and isinstance(e.get("version"), int)
    ]
    if not registered or max(registered) <= last_version:
        return []
    return [
        f"'last_version' is {last_version}, but the audit trail records registering "
        f"v{max(registered)} (lowered by hand, the decisions since would be replayed)"
    ]


def _v(version: int | None) -> str:
    return "nothing" if version is None else f"v{version}"
