"""Deeply nested JSON in the files and objects the project reads is a one-line error, never a
RecursionError traceback (json.loads recurses; RecursionError is no ValueError)."""

from __future__ import annotations

import copy
import json
import logging
import pickle
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core import json_text
from mnist_pipeline.core.errors import DataError, PipelineError, RegistryError
from mnist_pipeline.core.reports import Metrics, read_report
from mnist_pipeline.inbox import pending
from mnist_pipeline.registry import keys
from mnist_pipeline.registry.s3_lease import Lease, holder_died, this_host
from mnist_pipeline.serving.shadow_report import read_status
from tests.test_registry_cli import produce

runner = CliRunner()
DEEP = "[" * 100_000 + "]" * 100_000


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_nesting_up_to_the_bound_is_read_and_deeper_is_a_decode_error() -> None:
    assert json_text.loads(nested(json_text.MAX_DEPTH)) == json.loads(nested(json_text.MAX_DEPTH))
    assert json_text.loads(b'{"a": [1, {"b": "c"}]}') == {"a": [1, {"b": "c"}]}
    for depth in (json_text.MAX_DEPTH + 1, 900, 100_000):  # 900 parses in json.loads itself
        with pytest.raises(json.JSONDecodeError, match="nested deeper than 64 levels"):
            json_text.loads(nested(depth))
    with pytest.raises(ValueError, match=r"^nested deeper than 64 levels$"):  # no line, column
        json_text.loads(DEEP)
    with pytest.raises(json.JSONDecodeError, match="nested deeper"):
        json_text.loads('{"a": ' * 70 + "1" + "}" * 70)
    with pytest.raises(json.JSONDecodeError, match="integer string conversion"):
        json_text.loads('{"last_version": ' + "9" * 5000 + "}")  # a plain ValueError before
    refused = json_text.NestedTooDeep()  # Prefect pickles a task's exception
    assert str(pickle.loads(pickle.dumps(refused))) == str(copy.copy(refused)) == str(refused)


def test_a_deeply_nested_card_or_alias_document_is_a_registry_error(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text("evaluate: {min_accuracy: 0.9}\n")
    produce(work, 1, 0.95)
    opts = ["--root", str(work), "--params", str(work / "params.yaml"), "models"]
    assert runner.invoke(app, [*opts, "register"]).exit_code == 0
    store = work / "registry"
    (store / keys.card_key("mnist-cnn", 1)).write_text(DEEP)
    shown = runner.invoke(app, [*opts, "show", "v1"])
    assert isinstance(shown.exception, RegistryError), shown.exception
    assert "card is not readable JSON: nested deeper than 64 levels" in str(shown.exception)
    (store / keys.aliases_key("mnist-cnn")).write_text(DEEP)
    verified = runner.invoke(app, [*opts, "verify"])
    assert verified.exit_code == 1
    assert "aliases.json is not readable JSON: nested deeper than 64 levels\n" in verified.output


def test_deeply_nested_reports_records_and_saved_answers_are_named_errors(tmp_path: Path) -> None:
    report = tmp_path / "metrics.json"
    report.write_text(DEEP)
    with pytest.raises(PipelineError, match=r"metrics.json is not readable JSON \(nested deeper"):
        read_report(Metrics, report, "evaluate")
    folder = tmp_path / "pending"
    folder.mkdir()
    (folder / "record.json").write_text(DEEP)
    with pytest.raises(DataError, match="not a pending-image record .nested deeper"):
        pending.items(folder)
    saved = tmp_path / "model.json"
    saved.write_text(DEEP)
    with pytest.raises(DataError, match="not a saved GET /model answer .nested deeper"):
        read_status(saved)


def test_a_lease_object_that_is_no_lease_is_not_taken_for_a_dead_holder() -> None:
    """Bytes that are no lease, or a pid no process can have, do not say the holder died:
    the lease stands until its time to live runs out (no crash, the cautious answer)."""
    for body in (DEEP.encode(), b"[]", b'"owner"', b"{}"):
        assert holder_died(body) is False
    huge = {"host": this_host(), "pid": 10**30, "owner": "x"}  # os.kill: OverflowError
    assert holder_died(json.dumps(huge).encode()) is False


class _Replaced:
    """A store whose lease object another writer replaced by a JSON array."""

    location, role = "s3://bucket/prefix", "registry"

    def _get(self, key: str) -> tuple[bytes, str]:
        return b"[]", "etag"

    def _put(self, key: str, body: bytes, **conditions: str) -> bool:
        raise AssertionError("a lease taken over is not renewed")


def test_a_lease_replaced_by_something_else_is_taken_over_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lease = Lease(_Replaced(), "lock", ttl_s=0.03)  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="lease lock in s3://bucket/prefix was taken over"):
        lease.check_held()
    renewing = threading.Thread(target=lease._renew, daemon=True)  # its loop: it raised before
    with caplog.at_level(logging.ERROR):
        renewing.start()
        renewing.join(10)
    assert not renewing.is_alive()  # it stopped, saying so
    assert "lease lock was taken over while held" in caplog.text
