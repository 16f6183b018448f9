"""The drift event a server emits and the deployment trigger that answers it with retraining.

`mnist.serve.drift` on `mnist.model.<name>`, its payload naming the served version, each
feature's PSI and the features over the threshold; sent only when this process's environment
names a Prefect API that answers (checked by the monitor before it claims the shift).
"""

from __future__ import annotations

from typing import Any

DRIFT_EVENT = "mnist.serve.drift"
# The retraining run a drift event starts says why (its `reason` parameter, rendered by Prefect).
DRIFT_REASON = "live traffic drifted from MNIST test: {{ event.payload.summary }}"


def drift_payload(
    version: int | None, psi: dict[str, float], over: list[str], threshold: float, window: int
) -> dict[str, Any]:
    """The event's payload; its `summary` is the line logged and shown in the retraining run."""
    drifted = ", ".join(f"{name} {psi[name]:.3f}" for name in over)
    return {
        "version": version,
        "psi": psi,
        "drifted": over,
        "threshold": threshold,
        "window": window,
        "summary": f"v{version}: PSI {drifted} over {threshold} in the last {window} images",
    }


def emit_drift(model_name: str, payload: dict[str, Any]) -> bool:
    """Emit the drift event when this process's environment names a Prefect API (Prefect is not
    imported otherwise); a failure is a logged warning (announce.emit). The monitor asked the
    API's health just before claiming the shift (alias_events.api_problem), so this does not
    ask again: the less time between a claim and its event, the less a server stopped in
    between leaves a claim whose event never went out."""
    from mnist_pipeline.pipeline.announce import emit
    from mnist_pipeline.serving.alias_events import api_configured

    return api_configured() and emit(DRIFT_EVENT, model_name, payload)


def drift_trigger(model_name: str) -> Any:
    """The deployment trigger: one retraining run per drift event of this model."""
    from prefect.events import DeploymentEventTrigger

    from mnist_pipeline.pipeline.announce import resource_id

    return DeploymentEventTrigger(
        name=f"live traffic drifted for {model_name}",
        expect={DRIFT_EVENT},
        match={"prefect.resource.id": resource_id(model_name)},
        parameters={"reason": DRIFT_REASON},
    )
