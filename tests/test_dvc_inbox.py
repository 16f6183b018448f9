"""The DVC-tracked inbox (dvc.yaml's `inbox` stage): new labelled digits re-run ingest onwards,
and only then; `dvc push` / `dvc pull` share them; a clone that has not pulled them is refused."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.inbox import extra
from mnist_pipeline.inbox import store as inbox
from tests.dvc_helpers import dvc_env, lock_hashes, make_project, ran, run
from tests.test_dvc import DVC_STAGES, INBOX, STAGES
from tests.test_ingest import stroke_png

pytestmark = pytest.mark.slow
QUIET = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}


def test_new_labelled_digits_rerun_ingest_onwards_and_are_recorded(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_project(repo, tmp_path / "mirror")
    assert ran(run(repo, "dvc", "repro")) == set(DVC_STAGES)  # the empty inbox: MNIST alone
    empty = json.loads(Layout(repo).train_record.read_text())["fingerprint"]
    assert empty["extra_sha256"] == extra.NO_EXTRA_SHA256
    before = lock_hashes(repo)

    for seed in range(6):
        inbox.add(Layout(repo).inbox, stroke_png(seed), f"s{seed}.png", seed)
    status = run(repo, "dvc", "status")
    assert f"{INBOX}:" in status and "ingest:" in status and "modified" in status
    assert ran(run(repo, "dvc", "repro")) == {INBOX, *STAGES} - {"fetch"}
    after = lock_hashes(repo)
    assert after["data/ingested"] != before["data/ingested"]
    assert after["data/mnist"] == before["data/mnist"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (tracked,) = lock["stages"][INBOX]["outs"]
    assert (tracked["path"], tracked["nfiles"]) == ("data/extra", 6)  # `dvc repro` recorded it
    assert len(inbox.entries(Layout(repo).inbox)) == 6  # the stage kept the inbox (persist)
    record = json.loads(Layout(repo).train_record.read_text())["fingerprint"]
    assert record["extra_sha256"] == extra.extra_sha256(Layout(repo).extra_dir)
    assert record["extra_sha256"] != extra.NO_EXTRA_SHA256 and record["sha256"] != empty["sha256"]
    # Nothing changed since: nothing runs, and `dvc status` says so.
    assert ran(run(repo, "dvc", "repro")) == set()
    assert "up to date" in run(repo, "dvc", "status")

    # Shared: a clone gets the digits with `dvc pull`; before it, `dvc repro` refuses to start
    # from an empty inbox (it would train without them and record their loss).
    run(repo, "git", "add", "dvc.lock")
    run(repo, "git", "commit", "-q", "-m", "six labelled digits")
    run(repo, "dvc", "remote", "add", "-d", "local", str(tmp_path / "remote"))
    run(repo, "dvc", "push")
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    refused = run(clone, "dvc", "repro", ok=False)
    assert f"failed to reproduce '{INBOX}'" in refused, refused
    assert "records 6 file(s)" in refused and "dvc pull data/extra" in refused, refused
    assert ran(refused) == {INBOX} and not (clone / "data" / "extra").exists()
    run(clone, "dvc", "remote", "add", "-d", "local", str(tmp_path / "remote"))
    run(clone, "dvc", "pull", "data/extra")
    assert len(inbox.entries(Layout(clone).inbox)) == 6


def test_the_inbox_cannot_change_while_a_dvc_command_runs(tmp_path: Path) -> None:
    """`dvc repro` hashes data/extra for dvc.lock after ingest read it: an image added or removed
    in between would be recorded as ingested. While a DVC command claims data/extra (here a stage
    that depends on it), `data add` and `data remove` refuse, naming it, and change nothing; once
    it ends they work."""
    repo = tmp_path / "repo"
    make_project(repo, tmp_path / "mirror")
    inbox.add(Layout(repo).inbox, stroke_png(1), "one.png", 1)
    started, go = tmp_path / "started", tmp_path / "go"
    (tmp_path / "wait.py").write_text(  # a stage that runs until the test lets it end
        "import pathlib, sys, time\n"
        "pathlib.Path(sys.argv[1]).touch()\n"
        "while not pathlib.Path(sys.argv[2]).exists():\n"
        "    time.sleep(0.05)\n"
    )
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())
    wait = f"python {tmp_path / 'wait.py'} {started} {go}"
    stages["stages"]["wait"] = {"cmd": wait, "deps": ["data/extra"]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
    image = tmp_path / "two.png"
    image.write_bytes(stroke_png(2))
    queued = tmp_path / "three.png"
    queued.write_bytes(stroke_png(3))
    run(repo, "mnist-pipeline", "data", "add", "--pending", str(queued), "--label", "3")
    sha = hashlib.sha256(stroke_png(3)).hexdigest()
    before = sorted(p.relative_to(repo) for p in Layout(repo).inbox.rglob("*"))

    env = dvc_env(repo)
    repro = subprocess.Popen(["dvc", "repro", "wait"], cwd=repo, env=env, **QUIET)
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert repro.poll() is None and time.monotonic() < deadline, "dvc repro never started"
            time.sleep(0.05)
        changes = (["add", str(image), "--label", "2"], ["remove", "one.png"], ["accept", sha])
        for args in changes:
            refused = run(repo, "mnist-pipeline", "data", *args, ok=False)
            assert "cannot change while a DVC command uses it" in refused, refused
            assert f"(PID {repro.pid}): " in refused and "dvc repro wait" in refused, refused
            assert sorted(p.relative_to(repo) for p in Layout(repo).inbox.rglob("*")) == before
    finally:
        go.touch()
        assert repro.wait(timeout=60) == 0, repro.stdout.read()

    run(repo, "mnist-pipeline", "data", "add", str(image), "--label", "2")
    run(repo, "mnist-pipeline", "data", "accept", sha)
    assert sorted(e.label for e in inbox.entries(Layout(repo).inbox)) == [1, 2, 3]
