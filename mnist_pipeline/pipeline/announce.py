"""Who moves the registry's aliases, and telling a Prefect server that a model moved.

The registry records an actor string in its audit trail but knows nothing of Prefect; this is
the edge that does. Inside a Prefect flow run the actor is `prefect:<flow-run-name>` (its id
when it has no name), else `user:<login name>`. With a Prefect API configured
(`PREFECT_API_URL`), registering a version emits `mnist.model.registered` and every alias move
`mnist.alias.moved`, on the resource `mnist.model.<model name>`; a failed send is a warning,
never a failed registration.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.text import printable
from mnist_pipeline.inbox.events import server_configured
from mnist_pipeline.registry import Registration, Registry, default_actor
from mnist_pipeline.registry.aliases import MAX_ACTOR

REGISTERED = "mnist.model.registered"
MOVED = "mnist.alias.moved"
RESOURCE_PREFIX = "mnist.model."
log = logging.getLogger(__name__)


def current_actor() -> str:
    """`prefect:<flow-run-name or id>` inside a Prefect flow run, else `user:<login name>`."""
    name = _flow_run_name()
    return default_actor() if name is None else run_actor(name)


def run_actor(name: str, kind: str = "prefect") -> str:
    """`kind:<name>` as the audit trail takes an actor: one printable line, cut to its length
    (Prefect does not limit a run's name)."""
    return printable(f"{kind}:{name}")[:MAX_ACTOR]


def _flow_run_name() -> str | None:
    """The name (or id) of the flow run this process runs, if any."""
    # A flow run is in this process only if Prefect was imported, or the runner that started
    # the process said so: the CLI does not pay Prefect's import otherwise.
    if "prefect" in sys.modules or os.environ.get("PREFECT__FLOW_RUN_ID"):
        from prefect.runtime import flow_run

        if flow_run.id:
            return str(flow_run.name or flow_run.id)
    return None


def resource_id(model_name: str) -> str:
    return RESOURCE_PREFIX + model_name


def emit(event: str, model_name: str, payload: dict[str, Any]) -> bool:
    """Emit `event` about the model to the configured Prefect API (sent in the background,
    flushed at exit); False, with a warning logged, when there is no API or emitting fails."""
    try:
        if not server_configured():
            return False
        from prefect.events import emit_event

        resource = {"prefect.resource.id": resource_id(model_name)}
        return emit_event(event=event, resource=resource, payload=payload) is not None
    except Exception as exc:  # the model is registered or moved whatever the server says
        log.warning("could not emit %s for %s: %s", event, model_name, exc)
        return False


def _payload(registry: Registry, alias: str, version: int, previous: int | None) -> dict[str, Any]:
    """An event's payload but its actor: the move, and the version's accuracy from its card."""
    try:
        accuracy: float | None = float(registry.card(version)["metrics"]["accuracy"])
    except Exception:  # a damaged or foreign card: the event says so by a null
        accuracy = None
    return {"version": version, "alias": alias, "previous": previous, "accuracy": accuracy}


def _configured() -> bool:
    """Whether a Prefect API is configured; False, with a warning logged, when Prefect refuses
    its settings (a PREFECT_* variable it cannot read): the registry has changed already."""
    try:
        return server_configured() is not None
    except PipelineError as exc:
        log.warning("no events sent: %s", exc)
        return False


def moved(registry: Registry, alias: str, version: int, previous: int | None, actor: str) -> bool:
    """Tell the Prefect API that `alias` moved from `previous` to `version` (with no API
    configured, nothing: the card is not read either)."""
    if not _configured():
        return False
    payload = _payload(registry, alias, version, previous) | {"actor": actor}
    return emit(MOVED, registry.name, payload)


def registered(registry: Registry, registration: Registration, actor: str) -> None:
    """Tell the Prefect API about a new version and the alias it got (nothing when no version
    was stored, or no API is configured)."""
    if not registration.registered or not _configured():
        return
    found = registration.event or {}  # the trail's event: none if the store went down
    version, alias = registration.version, registration.alias
    payload = _payload(registry, alias, version, found.get("previous")) | {"actor": actor}
    if emit(REGISTERED, registry.name, payload) and found:
        emit(MOVED, registry.name, payload)
