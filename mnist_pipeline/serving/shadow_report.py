"""`mnist-pipeline serve-report`: would the shadow have done better than production?

Reads GET /model of a running server (or that JSON saved to a file), and judges each shadow
version, against each production version it was compared with, on its labelled live images
with the promotion rule's paired test (evaluation/paired.compare: McNemar's exact test,
`registry.promotion.significance` and `min_gain`; no per-digit check on live labels, as for the
extra holdout).
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mnist_pipeline.core import json_text
from mnist_pipeline.core.errors import DataError, describe_os_error
from mnist_pipeline.core.regular_file import read_regular
from mnist_pipeline.core.reports import Comparison
from mnist_pipeline.core.service_params import PromotionParams
from mnist_pipeline.evaluation.paired import compare
from mnist_pipeline.serving.live import Tally, paired_answers

MAX_SAVED_BYTES = 256 * 1024 * 1024  # a GET /model answer: kilobytes to a few megabytes


def fetch_status(url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """GET `url`/model as JSON; DataError naming the server when it cannot be read."""
    address = url.rstrip("/") + "/model"
    try:
        with urllib.request.urlopen(address, timeout=timeout_s) as response:  # noqa: S310
            return json_text.loads(response.read())
    except (OSError, ValueError, http.client.HTTPException) as exc:  # InvalidURL, BadStatusLine
        raise DataError(f"cannot read {address}: {type(exc).__name__}: {exc}") from None


def read_status(path: Path) -> dict[str, Any]:
    """A saved GET /model answer; DataError naming the file when it is not one."""
    try:
        status = json_text.loads(read_regular(path, MAX_SAVED_BYTES))
    except OSError as exc:
        raise DataError(f"not a saved GET /model answer: {describe_os_error(exc)}") from None
    except ValueError as exc:
        raise DataError(f"{path}: not a saved GET /model answer ({exc})") from None
    if not isinstance(status, dict) or not {"model", "following", "shadow"} <= status.keys():
        raise DataError(f"{path}: not a saved GET /model answer (no model, following and shadow)")
    return status


def tallies(status: dict[str, Any]) -> list[Tally]:
    """The shadow versions' tallies in a GET /model answer, against the production version each
    was last compared with, then those against earlier ones; DataError when it has none."""
    shadow = status.get("shadow") if isinstance(status, dict) else None
    if not isinstance(shadow, dict):
        raise DataError("the server has no shadow (serve.shadow is null)")
    versions, earlier = shadow.get("versions", {}), shadow.get("earlier", [])
    if not isinstance(versions, dict) or not isinstance(earlier, list):
        raise DataError(
            "the shadow's records are malformed: shadow.versions must be a mapping and "
            "shadow.earlier a list"
        )
    named = [
        k
        for k, body in versions.items()
        if not isinstance(body, dict) or body.get("version") is None or str(body["version"]) != k
    ]
    if named:  # each latest record is keyed by its own version
        raise DataError(
            f"the shadow's records are malformed: shadow.versions[{named[0]!r}] does not hold "
            "that version's record"
        )
    try:
        return [
            Tally.model_validate({k: v for k, v in body.items() if k in Tally.model_fields})
            for body in [*versions.values(), *earlier]
        ]
    except ValidationError as exc:
        where = "; ".join(_problem(e["loc"], e["msg"]) for e in exc.errors())
        raise DataError(f"the shadow's records are malformed: {where}") from None
    except (AttributeError, TypeError, ValueError) as exc:
        raise DataError(f"the shadow's records are malformed: {exc}") from None


def _problem(loc: tuple[Any, ...], message: str) -> str:
    """`field.path: message`, or the message alone for a rule across fields."""
    rule = message.removeprefix("Value error, ")
    return f"{'.'.join(map(str, loc))}: {rule}" if loc else rule


def judge(tally: Tally, policy: PromotionParams) -> Comparison | None:
    """The paired comparison of the shadow version against production on the images whose
    label arrived; None before any did."""
    if not tally.labels:
        return None
    production, challenger, labels = paired_answers(tally)
    return compare(production, challenger, labels, policy, per_digit_check=False)


def report(status: dict[str, Any], policy: PromotionParams) -> list[dict[str, Any]]:
    """Per shadow version: its counts and the paired verdict (None: no labels yet)."""
    found = []
    for tally in tallies(status):
        comparison = judge(tally, policy)
        found.append(
            {
                **tally.summary(),
                "comparison": None if comparison is None else comparison.model_dump(),
            }
        )
    return found


def lines(found: list[dict[str, Any]]) -> list[str]:
    """The report in words, one paragraph per shadow version and production version."""
    if not found:
        return ["no shadow version has seen traffic yet"]
    said = []
    for entry in found:
        agreement = entry["agreement"]
        against = "" if entry.get("production") is None else f" against v{entry['production']}"
        seen = f"v{entry['version']}{against}: compared on {entry['compared']} images"
        seen += "" if agreement is None else f", agreeing with production on {agreement:.1%}"
        seen += f"; {entry['skipped']} skipped (queue full); {entry['canary']} answered as canary"
        if entry.get("failed"):  # a challenger that raises compares nothing: say so
            seen += f"; failed on {entry['failed']} images"
        said.append(seen)
        comparison = entry["comparison"]
        if comparison is None:
            said.append("  no labelled image yet: no verdict")
            continue
        better = {"better": "would have done better", "worse": "would have done worse"}
        verdict = better.get(comparison["verdict"], "no significant difference")
        said.append(
            f"  {comparison['images']} labelled: shadow {comparison['challenger_accuracy']:.1%} "
            f"vs production {comparison['champion_accuracy']:.1%}: {verdict} "
            f"({comparison['why']})"
        )
    return said
