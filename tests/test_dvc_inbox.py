"""The DVC-tracked inbox: new labelled digits re-run ingest onwards, and only then."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.inbox import extra
from mnist_pipeline.inbox import store as inbox
from tests.dvc_helpers import lock_hashes, make_project, ran, run
from tests.test_dvc import STAGES
from tests.test_ingest import stroke_png

pytestmark = pytest.mark.slow


def test_new_labelled_digits_rerun_ingest_onwards_and_are_recorded(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_project(repo, tmp_path / "mirror")
    assert ran(run(repo, "dvc", "repro")) == set(STAGES)  # the empty inbox: MNIST alone
    empty = json.loads(Layout(repo).train_record.read_text())["fingerprint"]
    assert empty["extra_sha256"] == extra.NO_EXTRA_SHA256
    before = lock_hashes(repo)

    for seed in range(6):
        inbox.add(Layout(repo).inbox, stroke_png(seed), f"s{seed}.png", seed)
    status = run(repo, "dvc", "status")
    assert "data/extra.dvc" in status and "ingest" in status and "modified" in status
    assert ran(run(repo, "dvc", "repro")) == set(STAGES) - {"fetch"}
    after = lock_hashes(repo)
    assert after["data/ingested"] != before["data/ingested"]
    assert after["data/mnist"] == before["data/mnist"]
    tracked = yaml.safe_load((repo / "data" / "extra.dvc").read_text())["outs"][0]
    assert tracked["nfiles"] == 6  # `dvc repro` recorded the new inbox: `dvc push` shares it
    record = json.loads(Layout(repo).train_record.read_text())["fingerprint"]
    assert record["extra_sha256"] == extra.extra_sha256(Layout(repo).extra_dir)
    assert record["extra_sha256"] != extra.NO_EXTRA_SHA256 and record["sha256"] != empty["sha256"]
    # Nothing changed since: nothing runs, and `dvc status` says so.
    assert ran(run(repo, "dvc", "repro")) == set()
    assert "up to date" in run(repo, "dvc", "status")
