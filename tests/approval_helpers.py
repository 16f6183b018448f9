"""A registry with a version proposed for production, and a flow run that waits for its approval.

    python -m tests.approval_helpers PROJECT VERSION CHAMPION TIMEOUT_S

runs `waiting_flow` (the retraining flow's approval step alone) against the registry of the
project folder PROJECT (its params.yaml names the model) and prints the outcome.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from mnist_pipeline.core.params import Params, parse_params
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import Registration, Registry
from tests.registry_helpers import make_candidate
from tests.reports import PARAMS


def approval_params(model: str = "mnist-cnn", timeout_s: int = 86400) -> Params:
    """Params requiring approval (a gate the tiny candidates pass)."""
    registry = {"model_name": model, "approval": "required", "approval_timeout_s": timeout_s}
    return parse_params({"evaluate": {"min_accuracy": 0.9}, "registry": registry})


def proposed_project(folder: Path, model: str = "mnist-cnn") -> tuple[Registry, Registration]:
    """A project folder (params.yaml requiring approval) whose registry holds v1 (production,
    registered before approval was required) and v2 (better, so staging proposed for
    production); returns the registry and v2's registration."""
    folder.mkdir(parents=True, exist_ok=True)
    params = approval_params(model)
    (folder / "params.yaml").write_text(yaml.safe_dump({"registry": params.registry.model_dump()}))
    registry = Registry(folder / "registry", model)
    first = make_candidate(folder / "c1", 1, accuracy=0.95)
    register_candidate(registry, first, PARAMS)  # approval not required
    second = register_candidate(registry, make_candidate(folder / "c2", 2, accuracy=0.99), params)
    assert (second.version, second.alias, second.pending) == (2, "staging", "production")
    return registry, second


def main(argv: list[str] | None = None) -> None:
    from prefect import flow
    from prefect.states import Completed

    from flows.approval import await_approval

    parser = argparse.ArgumentParser()
    parser.add_argument("project", type=Path)
    parser.add_argument("version", type=int)
    parser.add_argument("champion", type=int)
    parser.add_argument("timeout_s", type=int)
    args = parser.parse_args(argv)
    model = yaml.safe_load((args.project / "params.yaml").read_text())["registry"]["model_name"]

    @flow(name="approval-check")
    def waiting_flow() -> object:
        registry = Registry(args.project / "registry", model)
        registration = Registration(
            model, args.version, "staging", "", ("staging",), args.champion, pending="production"
        )
        settled = await_approval(registry, registration, args.timeout_s)
        return Completed(message=settled.message, data=settled.outcome)

    print("outcome:", waiting_flow())


if __name__ == "__main__":
    main()
