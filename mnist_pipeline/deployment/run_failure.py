"""Telling a worker's flow run why its pull step failed, before the process exits: Prefect 3.8.8
sends a failed pull step's error only to the worker's own log and calls the run Crashed."""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from uuid import UUID


def fail_the_run(message: str, environ: dict[str, str] | None = None) -> bool:
    """Write `message` as an error to the logs of the flow run this process was started for (a
    worker names it in PREFECT__FLOW_RUN_ID) and set the run Failed with it, before the process
    exits (the worker would only call it Crashed, "Process exited with status code: 1"); False
    when there is no such run or the server did not take it (the worker's own log has the
    message all the same)."""
    run_id = (os.environ if environ is None else environ).get("PREFECT__FLOW_RUN_ID", "")
    if not run_id:
        return False
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import LogCreate
        from prefect.states import Failed

        log = LogCreate(
            name=__name__,
            level=logging.ERROR,
            message=message,
            timestamp=datetime.now(UTC),
            flow_run_id=UUID(run_id),
        )
        with get_client(sync_client=True) as client:
            client.create_logs([log])
            client.set_flow_run_state(UUID(run_id), Failed(message=message))
    except Exception as exc:  # noqa: BLE001 - the run fails with the message either way
        print(f"could not tell flow run {run_id} why it fails: {exc}", file=sys.stderr)
        return False
    return True
