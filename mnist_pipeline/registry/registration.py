"""What a caller hands the registry (`Submission`) and what registering did (`Registration`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.registry.aliases import PRODUCTION, STAGING, AliasState


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


class NotPromotable(RegistryError):
    """The version an alias would move to fails a check: its files, or the caller's rule."""


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
    # the audit trail's event that gave the new version its alias (None: none was recorded)
    event: Mapping[str, Any] | None = None

    def summary(self) -> str:
        if not self.registered:
            return f"nothing registered: {self.reason}"
        line = f"registered {self.name} v{self.version} as {self.alias}: {self.reason}"
        return line if self.warning is None else f"{line}\nwarning: {self.warning}"


DECISION_FIELDS = ("alias", "reason", "champion")  # the rest of a card's decision: its evidence


def applicable(decision: dict[str, Any], state: AliasState) -> tuple[str, str]:
    """The alias a committed version's decision gives it now: production only if production
    is still the version it was compared with (else it moved meanwhile: staging)."""
    alias, reason = str(decision["alias"]), str(decision["reason"])
    if alias == PRODUCTION and state.aliases.get(PRODUCTION) != decision.get("champion"):
        now = state.aliases.get(PRODUCTION)
        reason = (
            f"{reason}; but production moved to v{now} while it was compared with "
            f"v{decision.get('champion')}: kept as staging"
        )
        alias = STAGING
    return alias, reason
