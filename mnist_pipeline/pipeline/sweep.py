"""A sweep's pure parts: its grid of configs, checked whole, and the pick of the best trial.

A config is a mapping of dotted params overrides (`{"train.learning_rate": 0.002}`), applied
to the project's params file exactly as the retraining flow applies its own (core/params.py).
A sweep varies only what shapes the weights (the `model` and `train` sections, those of the
inputs fingerprint) and compares trials by their validation accuracy, so each config must keep
a validation split. The best trial is the highest validation accuracy; a tie goes to the
earliest config in the grid. Test accuracy plays no part: trials never evaluate on the test set.
Two configs that train the same (`train.dropout: null` is the architecture's own dropout) are
refused: a sweep would spend a trial on one model twice; so is a grid of more than MAX_CONFIGS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_pipeline.core.errors import ParamsError, PipelineError
from mnist_pipeline.core.params import Params, load_params
from mnist_pipeline.core.validators import quoted
from mnist_pipeline.training.fingerprint import SECTIONS

ARCH_DROPOUT = {"classic": 0.5, "wide": 0.2}  # each network's own dropout (model/network.py)
# Each config is a full training run on the work pool: a grid this long is a mistake (a
# generated list), not a sweep; several sweeps take more.
MAX_CONFIGS = 64
FAILURES_NAMED = 5  # in the error of a sweep none of whose trials succeeded; the rest counted


@dataclass(frozen=True)
class Trial:
    """One config's outcome: its validation accuracy, or why it has none (`error`)."""

    index: int
    config: dict[str, Any]
    val_accuracy: float | None = None
    fingerprint: str | None = None
    state_dict_sha256: str | None = None
    flow_run: str | None = None
    error: str | None = None
    data: tuple[str | None, str | None] | None = None  # (dataset, labelled digits) SHA-256s

    @property
    def ok(self) -> bool:
        return self.error is None and self.val_accuracy is not None


def _check_config(index: int, config: Any) -> dict[str, Any]:
    """`config` as a dict of dotted keys in the swept sections (one line naming the problem)."""
    if not isinstance(config, Mapping):
        raise ParamsError(
            f"sweep grid[{index}]: expected a mapping of dotted params, got {quoted(config)}"
        )
    for key in config:
        section = str(key).split(".")[0]
        if not isinstance(key, str) or "." not in key or section not in SECTIONS:
            raise ParamsError(
                f"sweep grid[{index}]: {quoted(key)}: a sweep varies only "
                f"{', '.join(f'{s}.*' for s in SECTIONS)} params (dotted, e.g. train.epochs)"
            )
    return dict(config)


def check_grid(grid: Any, params_file: Path) -> list[tuple[dict[str, Any], Params]]:
    """Every config of `grid` with its effective params (params_file plus the config), or one
    ParamsError naming the first bad config: an empty grid, an unknown param, a bad value, a
    config without a validation split or with another one than the first's, two configs that
    train the same."""
    if not isinstance(grid, Sequence) or isinstance(grid, str | bytes):
        raise ParamsError(f"sweep grid: expected a list of configs, got {quoted(grid)}")
    if not grid:
        raise ParamsError("sweep grid is empty: give at least one config")
    if len(grid) > MAX_CONFIGS:
        raise ParamsError(
            f"sweep grid has {len(grid)} configs, more than {MAX_CONFIGS}: each is a full "
            "training run on the work pool; split it into several sweeps"
        )
    load_params(params_file)  # the file's own errors name the file, not a config
    checked: list[tuple[dict[str, Any], Params]] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(grid):
        config = _check_config(index, raw)
        try:
            params = load_params(params_file, config)
        except ParamsError as exc:
            raise ParamsError(f"sweep grid[{index}]: {exc}") from None
        if params.train.val_size == 0:
            raise ParamsError(
                f"sweep grid[{index}]: train.val_size is 0: trials are compared by validation "
                "accuracy, so each needs a validation split"
            )
        split = (params.train.seed, params.train.val_size)  # they choose the held-out images
        first = checked[0][1].train if checked else params.train
        if split != (first.seed, first.val_size):
            raise ParamsError(
                f"sweep grid[{index}]: train.seed {split[0]} and train.val_size {split[1]} "
                f"hold out other validation images than grid[0]'s ({first.seed}, "
                f"{first.val_size}): trials are compared by validation accuracy, on the same "
                "images"
            )
        trained = _trained_as(params)
        if trained in seen:
            raise ParamsError(f"sweep grid[{index}]: trains the same as grid[{seen[trained]}]")
        seen[trained] = index
        checked.append((config, params))
    return checked


def _trained_as(params: Params) -> str:
    """What shapes the weights: an architecture's own dropout spelled out, and settings the
    training does not use left out (a constant schedule's peak and warm-up, augmentation's
    settings while it is off, Adam's beta1 under onecycle, which cycles it itself), and
    temperature scaling, which changes no prediction and so no trial's validation accuracy."""
    sections = {name: getattr(params, name).model_dump(mode="json") for name in SECTIONS}
    train = sections["train"]
    train["temperature_scaling"] = None
    if train["dropout"] is None:
        train["dropout"] = ARCH_DROPOUT[params.model.arch]
    if train["lr_schedule"] == "constant":
        train["max_learning_rate"] = train["warmup_fraction"] = None
    else:
        train["adam_betas"] = [None, train["adam_betas"][1]]
    if not train["augment"]["enabled"]:
        train["augment"] = {"enabled": False}
    return repr(sections)


def pick_best(trials: Sequence[Trial]) -> Trial:
    """The trial with the highest validation accuracy (a tie: the earliest in the grid); a
    PipelineError listing every failure when no trial succeeded."""
    done = [t for t in trials if t.ok]
    if not done:
        failures = "; ".join(f"grid[{t.index}]: {t.error}" for t in trials[:FAILURES_NAMED])
        if len(trials) > FAILURES_NAMED:
            failures += f"; and {len(trials) - FAILURES_NAMED} more (each trial run says why)"
        raise PipelineError(f"sweep: no trial succeeded ({failures})")
    return max(done, key=lambda t: (t.val_accuracy, -t.index))


def summary_lines(trials: Sequence[Trial], best: Trial | None) -> list[str]:
    """One line per trial (its config, validation accuracy or failure), the best marked."""
    lines = []
    for trial in trials:
        mark = "*" if best is not None and trial.index == best.index else " "
        outcome = f"val accuracy {trial.val_accuracy:.4f}" if trial.ok else f"FAILED: {trial.error}"
        lines.append(f"{mark} grid[{trial.index}] {trial.config}: {outcome}")
    return lines


@dataclass(frozen=True)
class Registered:
    """What the sweep's registering run did, from the row it published (None: no row)."""

    version: int | None
    reproduced: bool | None  # its weights are the winning trial's (None: nothing trained)
    outcome: str
    # its inputs fingerprint is the winning trial's (None: one of them not known); False when
    # labelled digits, the code or the deployment's params changed since the trials
    same_inputs: bool | None = None


def registering_outcome(
    row: Mapping[str, Any] | None, best: Trial, state_message: str | None, awaiting: bool
) -> Registered:
    """The registering run's result: the version it registered, or the one that already had the
    winner's inputs (it trained nothing), or its state's message when it published no row."""
    version = None if row is None else row.get("version")
    trained = row is not None and "state_dict_sha256" in row
    reproduced = row["state_dict_sha256"] == best.state_dict_sha256 if trained else None
    theirs = None if row is None else row.get("fingerprint")
    same_inputs = None if theirs is None or best.fingerprint is None else theirs == best.fingerprint
    if version is None:
        outcome = state_message or "no version reported"
    elif row is not None and row.get("up_to_date"):
        outcome = f"v{version} (up to date: it was trained on the same inputs; nothing trained)"
    elif row is not None and row.get("registered") is False:
        outcome = f"v{version} (nothing registered: v{version} already held the same files)"
    else:
        outcome = f"v{version}"
    if same_inputs is False and version is not None:
        outcome += (
            f", from other inputs than the winning trial's (fingerprint {theirs[:12]}, the "
            f"trial's {best.fingerprint[:12]}: labelled digits, the code or the deployment's "
            "params changed since the trials)"
        )
    if awaiting:
        outcome += ", awaiting approval (the registering run waits until it is answered)"
    return Registered(version, reproduced, outcome, same_inputs)
