"""The scrape in multiprocess mode (serving/metrics.py): every worker's files added up, and a
worker's file that is still empty (made, not yet sized: a worker starting, or one killed then)
does not fail it."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from mnist_pipeline.serving.metrics import ENV_MULTIPROC, Metrics

LABELS = (["endpoint", "method", "status"], ["/predict", "POST", "200"])


def worker_file(folder: Path, pid: int, requests: float) -> None:
    """What a worker's Counter leaves in its file: `requests` answered /predict requests."""
    stored = MmapedDict(str(folder / f"counter_{pid}.db"))
    name = "mnist_serve_requests"
    stored.write_value(mmap_key(name, f"{name}_total", *LABELS, "Requests answered"), requests, 0)
    stored.close()


def answered(text: str) -> float:
    (sample,) = [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "mnist_serve_requests_total" and s.labels.get("endpoint") == "/predict"
    ]
    return sample.value


def test_workers_are_added_up_and_an_empty_file_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_MULTIPROC, str(tmp_path))
    worker_file(tmp_path, 101, 3)
    worker_file(tmp_path, 102, 4)
    assert answered(Metrics().exposition().decode()) == 7
    (tmp_path / "counter_103.db").touch()  # a worker killed between making and sizing its file
    (tmp_path / "histogram_103.db").touch()
    assert answered(Metrics().exposition().decode()) == 7
