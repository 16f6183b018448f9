"""What the multi-host test's client host does, one command per call, printing JSON.

    python -m tests.multi_host_client bucket NAME
    python -m tests.multi_host_client run DEPLOYMENT PARAMS_JSON...
    python -m tests.multi_host_client wait FLOW_RUN_ID...
    python -m tests.multi_host_client runs
    python -m tests.multi_host_client latency FLOW_RUN_ID
    python -m tests.multi_host_client check REGISTRY_URL MIRROR_URL FOLDER
    python -m tests.multi_host_client history REGISTRY_URL MODEL
    python -m tests.multi_host_client get URL
    python -m tests.multi_host_client feedback URL TOKEN IMAGE LABEL
    python -m tests.multi_host_client wait-task FLOW_RUN_ID TASK_NAME
    python -m tests.multi_host_client task-end FLOW_RUN_ID TASK_NAME
    python -m tests.multi_host_client receive ADDRESS PORT FILE
    python -m tests.multi_host_client webhook URL NAME
    python -m tests.multi_host_client watch-heartbeats BLOCK_ID WITHIN_S
    python -m tests.multi_host_client sweep WORKDIR PARAMS_FILE GRID_JSON

Run inside the client namespace (tests/test_multi_host.py): the Prefect server, the S3 endpoint
and the mirror are reached only through the addresses in the environment and arguments.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def bucket(name: str) -> dict:
    import boto3

    boto3.client("s3").create_bucket(Bucket=name)
    return {"bucket": name}


def run(deployment: str, *parameters: str) -> list[str]:
    from prefect.deployments import run_deployment

    return [
        str(run_deployment(deployment, parameters=json.loads(p), timeout=0).id) for p in parameters
    ]


def wait(*ids: str) -> list[dict]:
    """Each run once final: state name, message, start and end times."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + 600
    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(i) for i in ids]
            if all(r.state is not None and r.state.is_final() for r in runs):
                return [
                    {"id": str(r.id), "state": r.state.name, "message": r.state.message}
                    for r in runs
                ]
            if time.monotonic() > deadline:
                return [{"id": str(r.id), "state": r.state.name, "timeout": True} for r in runs]
            time.sleep(0.5)


def runs() -> list[str]:
    """The id of every flow run the server lists."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return [str(r.id) for r in client.read_flow_runs(limit=200)]


def latency(flow_run_id: str) -> dict:
    """A final run's trigger-to-end time as Prefect records it: expected start (the time it was
    scheduled for; its creation if none) to end, in seconds."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
    since = run.expected_start_time or run.created
    return {"id": flow_run_id, "seconds": (run.end_time - since).total_seconds()}


def check(registry_url: str, mirror: str, folder: str) -> dict:
    """The registry's versions, verify(), and each version's ONNX accuracy on MNIST test
    (fetched from `mirror` into `folder`, content-verified) beside its card's."""
    import numpy as np
    import onnxruntime as ort

    from mnist_pipeline.core.layout import Layout
    from mnist_pipeline.core.params import DataParams
    from mnist_pipeline.data.dataset import load_mnist
    from mnist_pipeline.data.fetch import fetch
    from mnist_pipeline.registry import Registry

    layout = Layout(Path(folder))
    fetch(DataParams(mirrors=(mirror,)), layout, show_progress=False)
    mnist = load_mnist(layout.data_dir)
    pixels = (mnist.test_images.numpy()[:, None] / 255.0).astype(np.float32)
    registry = Registry(registry_url, "mnist-cnn")
    versions = []
    for card in registry.versions():
        onnx = registry.read_file(card["version"], "model.onnx")
        session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
        logits = session.run(["logits"], {"image": pixels})[0]
        versions.append(
            {
                "version": card["version"],
                "card_accuracy": card["metrics"]["accuracy"],
                "onnx_accuracy": float((logits.argmax(1) == mnist.test_labels.numpy()).mean()),
                "flow_run_id": card["origin"]["flow_run_id"],
                "epochs": card["params"]["train"]["epochs"],
                "learning_rate": card["params"]["train"]["learning_rate"],
            }
        )
    return {"versions": versions, "problems": registry.verify(), "aliases": registry.aliases()}


def history(registry_url: str, model: str) -> dict:
    """A registry's versions (with their ONNX SHA-256), verify(), aliases and audit trail."""
    from mnist_pipeline.registry import Registry

    registry = Registry(registry_url, model)
    log = registry.alias_log()
    return {
        "versions": [
            {"version": c["version"], "onnx": c["files"]["model.onnx"]} for c in registry.versions()
        ],
        "problems": registry.verify(),
        "aliases": registry.aliases(),
        "history": log["history"],
        "events": log["events"],
    }


def get(url: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return {"status": answer.status, "body": json.loads(answer.read() or b"null")}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": None}


def feedback(url: str, token: str, image: str, label: str) -> dict:
    """POST one labelled image to a server's /feedback; its status and JSON body."""
    import httpx

    files = {"file": (Path(image).name, Path(image).read_bytes(), "image/png")}
    headers = {"Authorization": f"Bearer {token}"}
    answer = httpx.post(url, files=files, data={"label": label}, headers=headers, timeout=30)
    return {"status": answer.status_code, "body": answer.json()}


def _task_runs(client, flow_run_id: str, name: str) -> list:
    """The flow run's task runs named `name`."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterName,
    )

    return client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=[name])),
    )


def wait_task(flow_run_id: str, name: str) -> dict:
    """Once the flow run's task run `name` is Running (or the flow run is final): its state."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + 600
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            tasks = _task_runs(client, flow_run_id, name)
            if any(t.state is not None and t.state.is_running() for t in tasks):
                return {"task": name, "state": "Running"}
            flow_state = client.read_flow_run(flow_run_id).state
            if flow_state is not None and flow_state.is_final():
                return {"task": name, "state": None, "flow_run": flow_state.name}
            time.sleep(0.5)
    return {"task": name, "state": None, "timeout": True}


def task_end(flow_run_id: str, name: str) -> dict:
    """When the flow run's task run `name` ended (POSIX seconds; None if it has not)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        (task,) = _task_runs(client, flow_run_id, name)
    return {"task": name, "end": task.end_time.timestamp() if task.end_time else None}


def receive(address: str, port: str, file: str) -> None:
    """Serve until killed: each JSON body POSTed is appended to `file` as one line; GET: 200."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with open(file, "a") as out:
                out.write(json.dumps(json.loads(body or b"{}")) + "\n")
            self.send_response(200)
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.end_headers()

    Path(file).touch()
    ThreadingHTTPServer((address, int(port)), Handler).serve_forever()


def webhook(url: str, name: str) -> dict:
    """A custom-webhook block posting {subject, body} to `url`: its slug and document id."""
    from prefect.blocks.core import Block

    from tests.notify_helpers import webhook_block

    slug = webhook_block(url, name)
    return {"slug": slug, "id": str(Block.load(slug)._block_document_id)}


def watch_heartbeats(block_id: str, within_s: str) -> dict:
    """The automation Prefect's docs give for flow runs whose process is gone: a run that sent
    a heartbeat and then nothing for `within_s` seconds is marked Crashed, and the block
    `block_id` is told (the run's own on_crashed hook died with its process)."""
    from prefect.automations import Automation
    from prefect.events.actions import ChangeFlowRunState, SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    trigger = EventTrigger(
        match={"prefect.resource.id": "prefect.flow-run.*"},
        after={"prefect.flow-run.heartbeat"},
        expect={"prefect.flow-run.*"},
        for_each={"prefect.resource.id"},
        posture=Posture.Proactive,
        threshold=1,
        within=timedelta(seconds=float(within_s)),
    )
    actions = [
        ChangeFlowRunState(state="CRASHED", message="the flow run stopped sending heartbeats"),
        SendNotification(
            block_document_id=block_id,
            subject="mnist-retrain run lost its process",
            body="flow run {{ flow_run.name }} ({{ flow_run.id }}) stopped sending heartbeats",
        ),
    ]
    created = Automation(name="crash-zombie-runs", trigger=trigger, actions=actions).create()
    return {"automation": str(created.id)}


def sweep(workdir: str, params_file: str, grid: str) -> dict:
    """The sweep flow run here (flows/sweep.py), its trials and registering run on the pool's
    workers; its result (each trial's flow run, the best, the version registered)."""
    from flows.sweep import sweep as sweep_flow

    return sweep_flow(
        grid=json.loads(grid), workdir=workdir, params_file=params_file, timeout_s=600
    )


COMMANDS = {
    "bucket": bucket,
    "run": run,
    "wait": wait,
    "runs": runs,
    "latency": latency,
    "check": check,
    "history": history,
    "get": get,
    "feedback": feedback,
    "wait-task": wait_task,
    "task-end": task_end,
    "receive": receive,
    "webhook": webhook,
    "watch-heartbeats": watch_heartbeats,
    "sweep": sweep,
}

if __name__ == "__main__":
    print(json.dumps(COMMANDS[sys.argv[1]](*sys.argv[2:])))
