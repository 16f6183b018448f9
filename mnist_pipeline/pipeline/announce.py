"""Who moves the registry's aliases, and telling a Prefect server that a model moved.

The registry records an actor string in its audit trail but knows nothing of Prefect; this is
the edge that does. Inside a Prefect flow run the actor is `prefect:<flow-run-name>` (its id
when it has no name), else `user:<login name>`. With a Prefect API configured
(`PREFECT_API_URL`), registering a version emits `mnist.model.registered` and every alias move
`mnist.alias.moved`, on the resource `mnist.model.<model name>`; a failed send is a warning,
never a failed registration.
"""

from __future__ import annotations

import os
import sys

from mnist_pipeline.registry.trail import default_actor


def current_actor() -> str:
    """`prefect:<flow-run-name or id>` inside a Prefect flow run, else `user:<login name>`."""
    # A flow run is in this process only if Prefect was imported, or the runner that started
    # the process said so: the CLI does not pay Prefect's import otherwise.
    if "prefect" in sys.modules or os.environ.get("PREFECT__FLOW_RUN_ID"):
        from prefect.runtime import flow_run

        if flow_run.id:
            return f"prefect:{flow_run.name or flow_run.id}"
    return default_actor()
