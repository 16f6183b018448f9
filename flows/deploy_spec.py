"""prefect.yaml against params.yaml: `prefect deploy --all` reads only prefect.yaml, which repeats
what `python -m flows.serve` builds from params.yaml's schedule section (name, cron, time zone,
limits, triggers, parameters). The build step (deploy_source.py) refuses a prefect.yaml whose
retraining deployment says otherwise, so an edit of one file alone cannot deploy unnoticed."""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.events import DeploymentEventTrigger
from pydantic import ValidationError

from flows.retrain import retrain
from flows.serve import deployment_options
from mnist_pipeline.core.params import load_params

RETRAIN = "flows/retrain.py:retrain"


def differences(spec: Mapping[str, Any], params_dir: Path, name: str = "prefect.yaml") -> list[str]:
    """What the retraining deployment of `spec` (the file `name`) says otherwise than the params
    file it names (found in `params_dir`); [] when they agree."""
    found = [
        d
        for d in spec.get("deployments") or []
        if isinstance(d, dict)
        and d.get("entrypoint") == RETRAIN
        and not (d.get("parameters") or {}).get("trial")  # a sweep's trials: no schedule
    ]
    if len(found) != 1:
        return [f"{name} has {len(found)} retraining deployments ({RETRAIN}), not one"]
    deployment = found[0]
    # the flow's own defaults for what prefect.yaml leaves out
    parameters = {**_defaults(), **(deployment.get("parameters") or {})}
    params_file = str(parameters["params_file"])
    params = load_params(params_dir / params_file)
    options = deployment_options(params, str(parameters["workdir"]), params_file)
    listed = deployment.get("schedules") or []
    entries = listed if isinstance(listed, list) else []  # not a list: refused below
    other = [e for e in entries if isinstance(e, dict) and "cron" not in e]
    if other:  # an interval or rrule: Prefect's, but not what the params file can say
        return [
            f"schedule {other[0]!r} is not a cron schedule: the params file's schedule is one "
            "cron (schedule.cron, schedule.timezone), which prefect.yaml repeats as "
            "`- cron: ...` (`timezone: ...`)"
        ]
    try:
        schedules = [(entry["cron"], entry.get("timezone", "UTC")) for entry in listed]
        given = deployment.get("concurrency_limit")  # None: no limit at all
        limit = None if given is None else ConcurrencyLimitConfig.model_validate(_limit(given))
        triggers = [DeploymentEventTrigger(**t) for t in deployment.get("triggers") or []]
    except (TypeError, KeyError, ValidationError) as exc:
        why = " ".join(str(exc).split())[:300]
        return [f"its schedules, concurrency_limit or triggers are not Prefect's: {why}"]
    pairs = {
        "name": (deployment.get("name"), options["name"]),
        "schedules": (schedules, [(c.cron, c.timezone) for c in options["schedules"]]),
        "concurrency_limit": (limit and _limit(limit), _limit(options["concurrency_limit"])),
        "parameters": (parameters, {**_defaults(), **options["parameters"]}),
        "triggers": (_sorted(triggers), _sorted(options["triggers"])),
    }
    return [
        f"{key} {ours!r} in {name}, {theirs!r} from {params_file}"
        if key != "triggers"
        else f"its triggers are not those of {params_file} (registry.model_name)"
        for key, (ours, theirs) in pairs.items()
        if ours != theirs
    ]


def deploying_file(directory: Path, argv: Sequence[str]) -> Path:
    """The file `prefect deploy` reads, its build steps run in its own process: the one its
    command line (`argv`) names with `--prefect-file`, else directory/prefect.yaml."""
    for at, arg in enumerate(argv):
        if arg.startswith("--prefect-file="):
            return Path(arg.partition("=")[2])
        if arg == "--prefect-file" and at + 1 < len(argv):
            return Path(argv[at + 1])
    return directory / "prefect.yaml"


def check(path: Path, params_dir: Path) -> list[str]:
    """`differences` of the deployments file `path` and the params file it names (found in
    `params_dir`); [] when `path` does not exist (a build step run outside `prefect deploy`)."""
    if not path.is_file():
        return []
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    return differences(spec if isinstance(spec, dict) else {}, params_dir, path.name)


def _defaults() -> dict[str, Any]:
    """The retraining flow's parameters that a deployment may leave out, with their defaults."""
    signature = inspect.signature(retrain.fn)
    return {n: signature.parameters[n].default for n in ("workdir", "params_file", "notify_block")}


def _limit(limit: Any) -> Any:
    """A concurrency limit as prefect.yaml may write it (a number, or a mapping without its
    strategy: ENQUEUE, Prefect's default), as one mapping."""
    if isinstance(limit, ConcurrencyLimitConfig):
        return {"limit": limit.limit, "collision_strategy": limit.collision_strategy.value}
    if isinstance(limit, int) and not isinstance(limit, bool):
        return {"limit": limit, "collision_strategy": "ENQUEUE"}
    return {"collision_strategy": "ENQUEUE", **limit} if isinstance(limit, dict) else limit


def _sorted(triggers: list[DeploymentEventTrigger]) -> list[str]:
    """Triggers compared whatever their order."""
    return sorted(json.dumps(t.model_dump(mode="json"), sort_keys=True) for t in triggers)
