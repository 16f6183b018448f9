"""What a caller hands the registry (`Submission`) and what registering did (`Registration`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mnist_pipeline.core.errors import RegistryError


@dataclass(frozen=True)
class Decision:
    """Which alias a new version should get, why, and the production version it was compared
    with (None: there was none). Reached by the caller before registering."""

    alias: str
    reason: str
    champion: int | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)  # recorded in the card as given

    def to_dict(self) -> dict[str, Any]:
        return {"alias": self.alias, "reason": self.reason, "champion": self.champion} | dict(
            self.evidence
        )


class ChampionMoved(RegistryError):
    """Production is no longer the version a decision was reached against: decide again."""

    def __init__(self, name: str, compared: int | None, now: int | None) -> None:
        super().__init__(
            f"{name}: production moved from {_v(compared)} to {_v(now)} while the candidate "
            "was being compared"
        )
        self.now = now


class AliasMoved(RegistryError):
    """An alias no longer points where a conditional move expected it to: nothing moved."""

    def __init__(self, name: str, alias: str, expected: int | None, now: int | None) -> None:
        super().__init__(f"{name}: {alias} is {_v(now)}, no longer {_v(expected)}")
        self.expected, self.now = expected, now


def _v(version: int | None) -> str:
    return "none" if version is None else f"v{version}"


@dataclass(frozen=True)
class Submission:
    """A new version: its files (name inside the version -> bytes), the caller's part of its
    card, and the alias decision. `identity` names the files whose bytes make two versions
    the same model; `fingerprint` (the caller's inputs hash, also in the card) lets a caller ask
    for nothing to be stored when a version already has it."""

    files: Mapping[str, bytes]
    description: Mapping[str, Any]
    decision: Decision
    identity: tuple[str, ...] = ()
    fingerprint: str | None = None


@dataclass(frozen=True)
class Registration:
    """Outcome of `Registry.register`: the new version, the alias it got, and why."""

    name: str
    version: int
    alias: str
    reason: str
    aliases: tuple[str, ...]
    champion: int | None  # the production version it was compared with (None: first version)
    warning: str | None = None  # committed, but the alias document could not be updated
    registered: bool = True  # False: an existing version already held this (see `reason`)
    pending: str | None = None  # an alias its decision holds back until a person approves it

    def summary(self) -> str:
        if not self.registered:
            return f"nothing registered: {self.reason}"
        line = f"registered {self.name} v{self.version} as {self.alias}: {self.reason}"
        return line if self.warning is None else f"{line}\nwarning: {self.warning}"
