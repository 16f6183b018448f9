"""One drift event per shift and cooldown for every process serving from one project folder.

Each worker of `serve --workers N` runs its own drift monitor, and a restarted server starts a
new one: left to themselves, N workers seeing one shift would emit N events, and a server
restarted during a shift would emit again. Before emitting, a monitor claims the event in a
small file beside the project (`.cache/serve/drift-<model>.json`: when the last event was sent,
and whether its shift is still open), under a file lock: a claim while the last event's shift is
open (no process has judged normal a window of images that came in after it) or within
`cooldown_s` of it is refused; a monitor that judges such a window normal closes the shift; a
claim whose event the Prefect server did not take is given back. The file is per model name, as
the event and the retraining trigger are. A file that cannot be read or written never stops an
event (the warning says why): a missed retraining is worse than a second one, which trains
nothing new ("up to date").
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from filelock import FileLock, Timeout

from mnist_pipeline.core import json_text
from mnist_pipeline.core.atomic import write_json
from mnist_pipeline.core.regular_file import read_regular

logger = logging.getLogger(__name__)
LOCK_WAIT_S = 10.0  # the monitor thread (off the request path) waits for other workers this long
# A shift still open this long after its event (no normal window seen since, by any process:
# perhaps none served meanwhile) may have its event again: a day of drift is worth another run.
OPEN_FOR_S = 24 * 3600.0


def claim_file(project: Path, model_name: str) -> Path:
    return project / ".cache" / "serve" / f"drift-{model_name}.json"


class DriftClaims:
    """The last drift event of a model, shared through `path` by every process serving it."""

    def __init__(self, path: Path, cooldown_s: float) -> None:
        self.path, self.cooldown_s = path, cooldown_s
        self._unsent: float | None = None  # this process's claim it could not give back

    def claim(self, now: float) -> float:
        """0.0 when `now` is recorded as the last event (its shift open), also when the file
        cannot be used (logged); else the seconds until an event may be claimed: infinity while
        another process's event covers a shift still open, what is left of the cooldown after
        one whose shift closed (a new shift then waits it out, as the process that sent the
        last event does)."""
        try:
            with self._locked():
                found = self._read()
                last = _time(found.get("last_event"))
                if last is not None and last == self._unsent:  # still this process's own
                    found, last = {"open": False}, _time(found.get("before"))
                if found.get("open") is True and last is not None and now - last < OPEN_FOR_S:
                    return math.inf  # that event's shift goes on: no window judged normal since
                if last is not None and abs(now - last) < self.cooldown_s:  # ahead: a racing claim
                    return last + self.cooldown_s - now
                write_json(self.path, {"last_event": now, "before": last, "open": True})
                self._unsent = None
        except (OSError, Timeout) as exc:
            logger.warning("drift: event not coordinated with other processes (%s): sent", exc)
        return 0.0

    def close(self, since: float) -> None:
        """A window of images that all came in from `since` (time.time()) on was judged normal:
        if the last event was sent before them, its shift is over, and the next shift's event
        may be claimed once the cooldown has passed. (A window that still holds images from
        before the event says nothing of the shift since.)"""
        try:
            with self._locked():
                found = self._read()
                last = _time(found.get("last_event"))
                if found.get("open") is True and last is not None and last <= since:
                    write_json(self.path, {**found, "open": False})
        except (OSError, Timeout) as exc:
            logger.warning("drift: the end of a shift not recorded in %s (%s)", self.path, exc)

    def give_back(self, now: float) -> None:
        """The event claimed at `now` was not taken by the Prefect server: the last event is
        again the one before (its shift closed), so another process, or this one at its next
        drifted window, may send it. Where the file cannot be written, this process's next
        claim treats the claim still recorded as given back (another process waits for it)."""
        try:
            with self._locked():
                found = self._read()
                if found.get("last_event") == now:  # not claimed anew since
                    write_json(self.path, {"last_event": found.get("before"), "open": False})
        except (OSError, Timeout) as exc:  # the next claim here takes its own back first
            self._unsent = now
            logger.warning("drift: unsent event still recorded in %s (%s)", self.path, exc)

    def _locked(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(self.path.with_name(f".{self.path.name}.lock"), timeout=LOCK_WAIT_S)

    def _read(self) -> dict:
        """The file's content ({} when it is missing or not what this program writes)."""
        try:
            found = json_text.loads(read_regular(self.path, 4096))
        except (OSError, ValueError):  # missing, or damaged: written afresh by the next claim
            return {}
        return found if isinstance(found, dict) else {}


def _time(found: object) -> float | None:
    """A recorded event time (None: never, or unknown)."""
    is_number = isinstance(found, (int, float)) and not isinstance(found, bool)
    return float(found) if is_number else None
