"""What the multi-host test's client host does, one command per call, printing JSON.

    python -m tests.multi_host_client bucket NAME
    python -m tests.multi_host_client run DEPLOYMENT PARAMS_JSON...
    python -m tests.multi_host_client wait FLOW_RUN_ID...
    python -m tests.multi_host_client check REGISTRY_URL MIRROR_URL FOLDER
    python -m tests.multi_host_client get URL

Run inside the client namespace (tests/test_multi_host.py): the Prefect server, the S3 endpoint
and the mirror are reached only through the addresses in the environment and arguments.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
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
            time.sleep(2)


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
            }
        )
    return {"versions": versions, "problems": registry.verify(), "aliases": registry.aliases()}


def get(url: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return {"status": answer.status, "body": json.loads(answer.read() or b"null")}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": None}


COMMANDS = {"bucket": bucket, "run": run, "wait": wait, "check": check, "get": get}

if __name__ == "__main__":
    print(json.dumps(COMMANDS[sys.argv[1]](*sys.argv[2:])))
