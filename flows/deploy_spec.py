"""prefect.yaml against params.yaml: `prefect deploy --all` reads only prefect.yaml, which repeats
what `python -m flows.serve` builds from params.yaml's schedule section (name, cron, time zone,
limits, triggers, parameters). The build step (deploy_source.py) refuses a prefect.yaml whose
retraining deployment says otherwise, so an edit of one file alone cannot deploy unnoticed."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from prefect.events import DeploymentEventTrigger
from pydantic import ValidationError

from flows.serve import deployment_options
from mnist_pipeline.core.params import load_params

RETRAIN = "flows/retrain.py:retrain"


def differences(spec: Mapping[str, Any], params_dir: Path) -> list[str]:
    """What prefect.yaml's retraining deployment (`spec`) says otherwise than the params file it
    names (found in `params_dir`); [] when they agree."""
    found = [
        d
        for d in spec.get("deployments") or []
        if isinstance(d, dict)
        and d.get("entrypoint") == RETRAIN
        and not (d.get("parameters") or {}).get("trial")  # a sweep's trials: no schedule
    ]
    if len(found) != 1:
        return [f"prefect.yaml has {len(found)} retraining deployments ({RETRAIN}), not one"]
    deployment = found[0]
    parameters = deployment.get("parameters") or {}
    params_file = str(parameters.get("params_file", "params.yaml"))
    params = load_params(params_dir / params_file)
    options = deployment_options(params, str(parameters.get("workdir", ".")), params_file)
    limit = options["concurrency_limit"]
    try:
        triggers = [DeploymentEventTrigger(**t) for t in deployment.get("triggers") or []]
    except (TypeError, ValidationError) as exc:
        return [f"prefect.yaml's triggers are not Prefect event triggers: {exc}"]
    pairs = {
        "name": (deployment.get("name"), options["name"]),
        "schedules": (
            [(s.get("cron"), s.get("timezone", "UTC")) for s in deployment.get("schedules") or []],
            [(c.cron, c.timezone) for c in options["schedules"]],
        ),
        "concurrency_limit": (
            deployment.get("concurrency_limit"),
            {"limit": limit.limit, "collision_strategy": limit.collision_strategy.value},
        ),
        "parameters": (parameters, options["parameters"]),
        "triggers": (
            [t.model_dump() for t in triggers],
            [t.model_dump() for t in options["triggers"]],
        ),
    }
    return [
        f"{key} {ours!r} in prefect.yaml, {theirs!r} from {params_file}"
        if key != "triggers"
        else f"its triggers are not those of {params_file} (registry.model_name)"
        for key, (ours, theirs) in pairs.items()
        if ours != theirs
    ]


def check(directory: Path) -> list[str]:
    """`differences` of directory/prefect.yaml and the params file it names."""
    spec = yaml.safe_load((directory / "prefect.yaml").read_text(encoding="utf-8"))
    return differences(spec if isinstance(spec, dict) else {}, directory)
