"""One drift event per cooldown for every process serving from one project folder.

Each worker of `serve --workers N` runs its own drift monitor, and a restarted server starts a
new one: left to themselves, N workers seeing one shift would emit N events, and a server
restarted during a shift would emit again at once. Before emitting, a monitor claims the event
in a small file beside the project (`.cache/serve/drift-<model>.json`: when the last event was
sent), under a file lock: a claim within `cooldown_s` of the last one is refused, and a claim
whose event could not be sent (no Prefect API, or the server down) is given back. The file is
per model name, as the event and the retraining trigger are. A file that cannot be read or
written never stops an event (the warning says why): a missed retraining is worse than a second
one, which trains nothing new ("up to date").
"""

from __future__ import annotations

import logging
from pathlib import Path

from filelock import FileLock, Timeout

from mnist_pipeline.core import json_text
from mnist_pipeline.core.atomic import write_json
from mnist_pipeline.core.regular_file import read_regular

logger = logging.getLogger(__name__)
LOCK_WAIT_S = 10.0  # the monitor thread (off the request path) waits for other workers this long


def claim_file(project: Path, model_name: str) -> Path:
    return project / ".cache" / "serve" / f"drift-{model_name}.json"


class DriftClaims:
    """The last drift event of a model, shared through `path` by every process serving it."""

    def __init__(self, path: Path, cooldown_s: float) -> None:
        self.path, self.cooldown_s = path, cooldown_s

    def claim(self, now: float) -> bool:
        """True (and `now` recorded as the last event) unless another process sent one within
        the cooldown; also True when the file cannot be used (logged)."""
        try:
            with self._locked():
                last = self._last()
                if last is not None and abs(now - last) < self.cooldown_s:  # ahead: a racing claim
                    return False
                write_json(self.path, {"last_event": now, "before": last})
        except (OSError, Timeout) as exc:
            logger.warning("drift: event not coordinated with other processes (%s): sent", exc)
        return True

    def give_back(self, now: float) -> None:
        """The event claimed at `now` was not sent (no Prefect API, or it failed): the last
        event is again the one before, so another process, or this one later, may send it."""
        try:
            with self._locked():
                found = self._read()
                if found.get("last_event") == now:  # not claimed anew since
                    write_json(self.path, {"last_event": found.get("before")})
        except (OSError, Timeout) as exc:
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

    def _last(self) -> float | None:
        """When the last event was sent (None: never, or unknown)."""
        found = self._read().get("last_event")
        return float(found) if isinstance(found, (int, float)) else None
