"""What a challenger did on live traffic, per version: pure counting, no I/O (challenger.py).

`Tally` counts, per challenger version and the production version it was compared with, the
images compared (agreeing or not), those skipped (the shadow queue was full) and those the
challenger answered as canary, and, for images whose trusted label arrived later, a 2x2 table
per true digit: both right, only production, only the challenger, neither. `LabelMemory`
remembers, for the latest images (bounded), which digits both models gave, keyed by the
SHA-256 of the uploaded bytes, the key /feedback computes too. `paired_answers` turns a tally's
tables back into the per-image arrays the promotion rule's paired test takes
(evaluation/paired.py).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Hashable
from typing import Annotated, Any, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

LABEL_MEMORY = 50_000  # images remembered for a later label (~100 bytes each)


class Pairs(BaseModel):
    """Labelled images of one true digit, by which of the two models got them right."""

    model_config = ConfigDict(extra="forbid")

    both: int = Field(default=0, ge=0)
    production_only: int = Field(default=0, ge=0)
    challenger_only: int = Field(default=0, ge=0)
    neither: int = Field(default=0, ge=0)

    def add(self, production_right: bool, challenger_right: bool) -> None:
        if production_right and challenger_right:
            self.both += 1
        elif production_right:
            self.production_only += 1
        elif challenger_right:
            self.challenger_only += 1
        else:
            self.neither += 1

    @property
    def total(self) -> int:
        return self.both + self.production_only + self.challenger_only + self.neither


Digit = Annotated[str, StringConstraints(pattern=r"^[0-9]$")]  # a true digit, as a JSON key
MAX_LABELLED = 10_000_000  # labelled images in one tally: far more than reviews ever give


class Tally(BaseModel):
    """One challenger version's live record against one production version (counts since this
    process started): a challenger compared with two production versions has two tallies, so
    its agreement and paired counts never mix them."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, strict=True)  # strict: a saved record's `true` is no version
    production: int | None = Field(default=None, ge=1, strict=True)  # what it was compared with
    compared: int = Field(default=0, ge=0)  # images both models classified
    agreed: int = Field(default=0, ge=0)  # of those, the same digit
    skipped: int = Field(default=0, ge=0)  # not shadowed: the queue was full
    canary: int = Field(default=0, ge=0)  # images the challenger answered (canary share)
    failed: int = Field(default=0, ge=0)  # images the challenger failed on (an exception)
    labelled: dict[Digit, Pairs] = Field(default_factory=dict)  # by true digit "0".."9"

    @model_validator(mode="after")
    def _agreed_among_compared(self) -> Tally:
        if self.agreed > self.compared:
            raise ValueError(f"v{self.version}: agreed {self.agreed} of {self.compared} compared")
        labelled = sum(pairs.total for pairs in self.labelled.values())
        if labelled > MAX_LABELLED:  # the paired test holds one entry per image
            raise ValueError(
                f"v{self.version}: {labelled:,} labelled images, more than the {MAX_LABELLED:,} "
                "one serving process can have recorded"
            )
        return self

    def compare(self, production: np.ndarray, challenger: np.ndarray) -> int:
        """Count one batch's digits from both models; returns how many disagree."""
        differ = int((production != challenger).sum())
        self.compared += len(production)
        self.agreed += len(production) - differ
        return differ

    def label(self, truth: int, production: int, challenger: int) -> None:
        self.labelled.setdefault(str(truth), Pairs()).add(production == truth, challenger == truth)

    @property
    def disagreement(self) -> float:
        return (self.compared - self.agreed) / self.compared if self.compared else 0.0

    @property
    def labels(self) -> int:
        return sum(p.total for p in self.labelled.values())

    @property
    def challenger_error(self) -> float:
        right = sum(p.both + p.challenger_only for p in self.labelled.values())
        return 1 - right / self.labels if self.labels else 0.0

    @property
    def production_error(self) -> float:
        """Production's error on the same labelled images as `challenger_error`."""
        right = sum(p.both + p.production_only for p in self.labelled.values())
        return 1 - right / self.labels if self.labels else 0.0

    @classmethod
    def total(cls, tallies: list[Tally], production: int | None) -> Tally:
        """One challenger version's tallies against every production version, added up (what
        the canary is judged on: its failures and errors are its own whoever production is),
        named after `production`."""
        summed = cls(version=tallies[0].version, production=production)
        for tally in tallies:
            summed.compared += tally.compared
            summed.agreed += tally.agreed
            summed.skipped += tally.skipped
            summed.canary += tally.canary
            summed.failed += tally.failed
            for digit, pairs in tally.labelled.items():
                into = summed.labelled.setdefault(digit, Pairs())
                for field in Pairs.model_fields:
                    setattr(into, field, getattr(into, field) + getattr(pairs, field))
        return summed

    def summary(self) -> dict[str, object]:
        """The JSON of GET /model: the counts, plus agreement and accuracies where defined."""
        body = self.model_dump()
        labels = self.labels
        body["agreement"] = self.agreed / self.compared if self.compared else None
        for model, right in (
            ("production", lambda p: p.both + p.production_only),
            ("challenger", lambda p: p.both + p.challenger_only),
        ):
            hits = sum(right(p) for p in self.labelled.values())
            body[f"{model}_accuracy"] = hits / labels if labels else None
        return body


class Answered(NamedTuple):
    """Both models' digits for one remembered image."""

    version: int  # the challenger's
    production: int
    challenger: int
    production_version: int  # the version that gave `production`


class LabelMemory:
    """The latest `size` images' answers by SHA-256, and the labels that came for images still
    in the shadow queue (recorded a moment after the reply), until their record; the oldest
    forgotten first. The latest `size` images labelled are remembered too, with the challenger
    version they were scored for: an image counts once for a version, at its first label,
    however often it is sent and labelled again. Not locked: the caller holds its own lock."""

    def __init__(self, size: int = LABEL_MEMORY) -> None:
        self.size = size
        self._seen: OrderedDict[str, Answered] = OrderedDict()
        self._early: OrderedDict[str, int] = OrderedDict()
        self._queued: Counter[str] = Counter()  # images in the shadow queue, by SHA-256
        self._labelled: OrderedDict[tuple[str, int], None] = OrderedDict()  # (image, version)

    def queued(self, keys: list[str]) -> None:
        """These images wait in the shadow queue: a label for one of them waits for its record."""
        self._queued.update(keys)

    def done(self, keys: list[str]) -> None:
        """These images left the shadow queue (recorded, or the challenger failed on them): a
        label kept for one of them and not taken by its record is dropped."""
        self._queued.subtract(keys)
        for key in set(keys):
            if self._queued[key] <= 0:
                del self._queued[key]
                self._early.pop(key, None)

    def remember(self, sha256: str, answered: Answered) -> int | None:
        """Keep the image's answers for its label; if its label came first, that label (taken
        now, and the answers not kept: they are scored at once)."""
        if (sha256, answered.version) in self._labelled:  # counted for it at its first label
            return None
        early = self._early.pop(sha256, None)
        if early is None:
            _keep(self._seen, sha256, answered, self.size)
        else:
            _keep(self._labelled, (sha256, answered.version), None, self.size)
        return early

    def take(self, sha256: str, truth: int) -> Answered | None:
        """The image's answers, forgotten now (each image is counted at its first label); None
        when none are recorded, and `truth` kept if the image waits in the shadow queue."""
        answered = self._seen.pop(sha256, None)
        if answered is not None:
            _keep(self._labelled, (sha256, answered.version), None, self.size)
        elif self._queued[sha256] > 0:
            _keep(self._early, sha256, truth, self.size)
        return answered

    def __len__(self) -> int:
        return len(self._seen)


def _keep(memory: OrderedDict[Any, Any], key: Hashable, value: Any, size: int) -> None:
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > size:
        memory.popitem(last=False)


def paired_answers(tally: Tally) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image (production right, challenger right, true digit) arrays of the labelled
    images, rebuilt from the tally's tables (the order does not matter to the paired test)."""
    cells = [
        (ours, theirs, int(digit), count)
        for digit, pairs in sorted(tally.labelled.items())
        for ours, theirs, count in (
            (True, True, pairs.both),
            (True, False, pairs.production_only),
            (False, True, pairs.challenger_only),
            (False, False, pairs.neither),
        )
    ]
    counts = np.array([cell[3] for cell in cells], np.int64)
    production, challenger, labels = (
        np.repeat(np.array([cell[i] for cell in cells], dtype), counts)
        for i, dtype in ((0, bool), (1, bool), (2, np.int64))
    )
    return production, challenger, labels
