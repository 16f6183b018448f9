"""How a retraining run is given its params and its folder: paths on the flow scripts' command
lines, the flow's named parameters as params.yaml overrides, the name of the run's own folder
inside runs/, and when its fetch is tried again."""

from __future__ import annotations

import argparse
import re
import uuid
from typing import Any

from prefect.runtime import flow_run
from prefect.states import State

from mnist_pipeline.core.errors import ParamsError
from mnist_pipeline.core.text import empty_path
from mnist_pipeline.data.fetch import FetchError


def path_option(text: str) -> str:
    """A path on a flow script's command line (argparse's `type`): an empty or blank one is a
    usage error (exit 2)."""
    if problem := empty_path(text):
        raise argparse.ArgumentTypeError(problem)
    return text


def flow_overrides(
    epochs: int | None, learning_rate: float | None, min_accuracy: float | None, mirror: str | None
) -> dict[str, Any]:
    """Flow parameters as dotted params.yaml overrides (only those given)."""
    pairs = {
        "train.epochs": epochs,
        "train.learning_rate": learning_rate,
        "evaluate.min_accuracy": min_accuracy,
        "data.mirrors": [m.strip() for m in mirror.split(",") if m.strip()] if mirror else None,
    }
    return {key: value for key, value in pairs.items() if value is not None}


def merged_overrides(given: dict[str, Any] | None, named: dict[str, Any]) -> dict[str, Any]:
    """The `overrides` parameter plus the named parameters' overrides (a key in both: error)."""
    given = dict(given or {})
    both = sorted(set(given) & set(named))
    if both:
        raise ParamsError(f"override {both[0]!r} is given twice: in overrides and as a parameter")
    return given | named


def run_folder_name() -> str:
    """<flow-run-name>-<last 12 hex digits of its id> inside a flow run, local-<random> outside
    one. Prefect's run ids are UUIDv7, whose first digits are a timestamp shared by runs started
    in the same minute; the last ones are random. A run name is anyone's text: only letters,
    digits, '.', '_' and '-' of it are kept (one folder inside runs/, never "../x" or "a/b")."""
    if flow_run.id:
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(flow_run.name or "run")).lstrip(".-")
        return f"{name[:64] or 'run'}-{str(flow_run.id).replace('-', '')[-12:]}"
    return f"local-{uuid.uuid4().hex[:8]}"


def fetch_worth_retrying(_task: Any, _task_run: Any, state: State) -> bool:
    """Whether a failed fetch may succeed if asked again: not when every mirror answered for
    good (a checksum mismatch, a missing folder, a 404), which retries would only repeat."""
    try:
        state.result()
    except FetchError as exc:
        return exc.transient
    except Exception:  # noqa: BLE001 - anything else is tried again, as before
        return True
    return False
