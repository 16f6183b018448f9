"""The multi-host test's races on one bucket: 8 registrations of different models at once from
the two worker hosts (4 processes each) must become versions 1-8, each model once; then 8
promotions at once (4 from each host) must each be recorded once, with the alias history and
the audit trail agreeing (verify clean) and production where the last recorded move put it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT
from tests.multi_host_helpers import base_env, client
from tests.netns_helpers import Host
from tests.registry_helpers import make_candidate
from tests.reports import MODEL

RACES = "s3://mnist-models/races"
PER_HOST = 4
WORKERS = ("w1", "w2")


def _start(host: Host, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        host.run(args),
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(procs: list[subprocess.Popen[str]]) -> list[str]:
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        outputs.append(out)
    return outputs


def race(net: dict[str, Host], folders: dict[str, Path], aws_env: dict[str, str]) -> None:
    """Both races against RACES, checked from the client host."""
    me, procs, go, onnx = net["client"], [], folders["client"] / "races-go", set()
    for i in range(len(WORKERS) * PER_HOST):
        name = WORKERS[i % len(WORKERS)]
        candidate = folders[name] / "races" / f"candidate-{i}"
        make_candidate(candidate, i, accuracy=0.9 + i / 100)
        onnx.add(candidate / "model.onnx")
        env = {**base_env(folders[name] / "home"), **aws_env}
        registering = [sys.executable, "-m", "tests.registry_helpers", RACES, str(candidate)]
        procs.append(_start(net[name], [*registering, "--go", str(go)], env))
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    go.touch()  # all 8 are past their imports: they register at once
    versions = sorted(int(out.split()[-1]) for out in _finish(procs))
    assert versions == list(range(1, 9))
    seen = client(me, aws_env | base_env(folders["client"] / "home"), "history", RACES, MODEL)
    assert seen["problems"] == [] and [v["version"] for v in seen["versions"]] == versions
    expected = {hashlib.sha256(p.read_bytes()).hexdigest() for p in onnx}
    assert {v["onnx"] for v in seen["versions"]} == expected  # each model exactly once

    procs = []
    for i, version in enumerate(versions):
        name = WORKERS[i % len(WORKERS)]
        root = folders[name] / "races"
        (root / "params.yaml").write_text(
            yaml.safe_dump({"registry": {"root": RACES, "model_name": MODEL}})
        )
        env = {**base_env(folders[name] / "home"), **aws_env}
        promote = ["models", "promote", str(version), "--comment", f"race-{version}"]
        procs.append(
            _start(
                net[name],
                [sys.executable, "-m", "mnist_pipeline", "--root", str(root), *promote],
                env,
            )
        )
    _finish(procs)
    seen = client(me, aws_env | base_env(folders["client"] / "home"), "history", RACES, MODEL)
    assert seen["problems"] == []
    raced = [e for e in seen["events"] if "race-" in json.dumps(e.get("evidence", e))]
    assert sorted(e["version"] for e in raced) == versions  # each promotion recorded once
    assert seen["aliases"]["production"] == raced[-1]["version"]
    assert seen["history"]["production"][-1] == raced[-1]["version"]
