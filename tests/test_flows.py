"""The retraining flow on tiny synthetic data, against Prefect's test harness."""

from __future__ import annotations

import http.server
import json
import logging
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prefect.exceptions import ParameterTypeError
from prefect.settings import PREFECT_API_URL

from flows.artifacts import (
    INGEST_KEY,
    MISTAKES_KEY,
    PARAMS_KEY,
    PER_CLASS_KEY,
    REPORT_KEY,
    gate_rows,
)
from flows.retrain import main as retrain_main
from flows.retrain import retrain
from flows.run_options import flow_overrides
from flows.sweep import sweep
from mnist_pipeline.core.errors import StageFailed
from mnist_pipeline.core.reports import Metrics
from mnist_pipeline.registry import Registry
from tests.flow_helpers import (
    flow_run_tags,
    latest_artifact,
    make_workdir,
    registry_versions,
    task_runs,
)
from tests.reports import metrics_report
from tests.synthetic import write_mirror

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_flow_overrides_only_carry_given_values() -> None:
    assert flow_overrides(None, None, None, None) == {}
    assert flow_overrides(2, 0.01, 0.5, "/a,/b") == {
        "train.epochs": 2,
        "train.learning_rate": 0.01,
        "evaluate.min_accuracy": 0.5,
        "data.mirrors": ["/a", "/b"],
    }


def test_numeric_flow_parameters_are_as_strict_as_params_yaml() -> None:
    """Prefect's own check would make `true` 1 and "3" 3 before the params check saw them."""
    for raw in ({"epochs": True}, {"epochs": "3"}, {"learning_rate": True}, {"min_accuracy": "1"}):
        with pytest.raises(ParameterTypeError, match="Input should be a valid"):
            retrain.validate_parameters(raw)
    given = retrain.validate_parameters({"epochs": 3, "learning_rate": 1, "min_accuracy": 0.9})
    assert (given["epochs"], given["learning_rate"], given["min_accuracy"]) == (3, 1.0, 0.9)
    with pytest.raises(ParameterTypeError, match="timeout_s"):
        sweep.validate_parameters({"grid": [{}], "timeout_s": True})


def test_success_registers_a_version_and_publishes_artifacts(tiny_workdir: Path) -> None:
    state = retrain(workdir=str(tiny_workdir), epochs=1, return_state=True)
    result = state.result()
    assert result["version"] == 1 and result["alias"] == "production"
    assert registry_versions(tiny_workdir) == [1]
    card = Registry(tiny_workdir / "registry", "mnist-cnn").card("1")
    assert card["params"]["train"]["epochs"] == 1  # effective params are recorded
    report = latest_artifact(REPORT_KEY)["data"]
    assert report.startswith("# MNIST retraining: mnist-cnn v1\n\n| item | value |")
    assert "first version" in report and "alias `production`" in report
    assert f"| ONNX SHA-256 | `{card['files']['model.onnx']}` |" in report
    assert f"| dataset SHA-256 | `{card['data']['dataset_sha256']}` |" in report
    assert (
        "in mnist-cnn v1 (model, reports, plots: `mnist-pipeline models show 1 --json`)" in report
    )
    assert report.count("data:image/png;base64,") == 3  # curves, confusion matrix, mistakes
    params = {row["key"]: row["value"] for row in json.loads(latest_artifact(PARAMS_KEY)["data"])}
    assert params["train.epochs"] == "1" and params["evaluate.min_accuracy"] == "0.0"
    flow_run_id = str(state.state_details.flow_run_id)
    assert {"registered", "alias:production"} <= set(flow_run_tags(flow_run_id))
    table = latest_artifact(PER_CLASS_KEY)
    assert table is not None and "precision" in str(table["data"])
    mistakes = latest_artifact(MISTAKES_KEY)
    assert mistakes is not None and "data:image/png;base64," in mistakes["data"]
    stages = ["fetch", "ingest", "train", "evaluate", "export", "parity", "register"]
    assert list(result["seconds"]["tasks"]) == stages
    ingested = latest_artifact(INGEST_KEY)["data"]  # an empty inbox: MNIST alone
    assert ingested.startswith("**Labelled digits users added**: 0 train + 0 holdout, 0 refused")
    # Each task waits for the one before, so Prefect's graph draws the chain. (Prefect may add
    # an earlier task too: it links results by object identity, and for strings, floats and
    # tuples by id() alone, which a freed object's successor can share.)
    runs = task_runs(flow_run_id)
    chain = ["fetch", "ingest", "inputs", *stages[2:]]
    assert sorted(runs) == sorted(chain)
    for i, (before, after) in enumerate(zip(chain, chain[1:], strict=False)):
        waits = [w["id"] for w in runs[after]["task_inputs"].get("wait_for", [])]
        assert runs[before]["id"] in waits, after
        assert set(waits) <= {runs[name]["id"] for name in chain[: i + 1]}, after
    assert "wait_for" not in runs["fetch"]["task_inputs"]
    # The run worked in its own folder; the card says which run made it, from which inputs.
    run_folder = Path(result["run_folder"])
    assert run_folder.parent == tiny_workdir / "runs" and (run_folder / "models").is_dir()
    assert not (tiny_workdir / "models").exists() and not (tiny_workdir / "reports").exists()
    assert card["origin"]["kind"] == "prefect" and card["origin"]["flow_run_id"] == flow_run_id
    assert card["fingerprint"]["sha256"] == result["fingerprint"]
    # The audit trail names the flow run that registered it.
    (event,) = Registry(tiny_workdir / "registry", "mnist-cnn").alias_log()["events"]
    name = httpx.get(f"{PREFECT_API_URL.value()}/flow_runs/{flow_run_id}", timeout=30)
    assert event["actor"] == f"prefect:{name.json()['name']}"


def test_gate_failure_fails_the_run_and_registers_nothing(tiny_workdir: Path) -> None:
    state = retrain(workdir=str(tiny_workdir), min_accuracy=1.0, return_state=True)
    assert state.is_failed()
    assert "below" in state.message and "1.0" in state.message
    assert "stage evaluate failed" in state.message
    assert registry_versions(tiny_workdir) == []
    # The rejected candidate's report: what it scored, the gate it missed, its mistakes.
    report = latest_artifact(REPORT_KEY)["data"]
    assert report.startswith("# MNIST retraining: rejected at evaluate")
    assert "| gate | missed: evaluate.min_accuracy 100.00% |" in report
    assert "Nothing was registered." in report and "data:image/png;base64," in report
    tags = flow_run_tags(str(state.state_details.flow_run_id))
    assert {"rejected", "rejected:evaluate"} <= set(tags) and "registered" not in tags
    assert not list(tiny_workdir.glob("runs/*/models/model.onnx"))


def test_a_registry_folder_that_cannot_take_files_fails_the_run_before_training(
    tiny_workdir: Path,
) -> None:
    """Found at the start (the inputs task), not after training, evaluation and export."""
    unusable = "/proc/mnist-registry"  # no folder can be made there, even by root
    state = retrain(
        workdir=str(tiny_workdir), overrides={"registry.root": unusable}, return_state=True
    )
    assert state.is_failed()
    assert f"stage inputs failed: {unusable}: " in state.message, state.message
    assert not list(tiny_workdir.glob("runs/*/models/model.pt"))  # nothing was trained


def test_the_command_ends_with_one_error_line(
    tiny_workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m flows.retrain`: a bad params file is told before a run starts, a failed run
    ends with its error once (Prefect's log has the traceback), each with the CLI's exit code."""
    monkeypatch.chdir(tiny_workdir)
    with pytest.raises(SystemExit) as ended:
        retrain_main(["--params", "missing.yaml"])
    assert ended.value.code == 2
    assert capsys.readouterr().err == "error: params file not found: missing.yaml\n"
    strict = yaml.safe_load((tiny_workdir / "params.yaml").read_text())
    strict["evaluate"]["min_accuracy"] = 1.0
    (tiny_workdir / "strict.yaml").write_text(yaml.safe_dump(strict))
    with pytest.raises(SystemExit) as ended:
        retrain_main(["--params", "strict.yaml"])
    assert ended.value.code == 1
    last = capsys.readouterr().err.rstrip().splitlines()[-1]
    assert last.startswith("error: stage evaluate failed") and "below" in last
    assert registry_versions(tiny_workdir) == []


@pytest.mark.parametrize(
    ("script", "argv", "option"),
    [
        ("retrain", ["--params", ""], "--params"),
        ("sweep", [""], "grid"),
        ("sweep", ["grid.yaml", "--params", ""], "--params"),
        ("serve", ["--workdir", ""], "--workdir"),
        ("serve", ["--params-file", ""], "--params/--params-file"),
        ("retrain", ["--params", "  "], "--params"),
    ],
)
def test_an_empty_path_on_a_flow_command_line_is_a_usage_error(
    script: str, argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not the current folder, which no one typed (`--workdir ""` would deploy it)."""
    import importlib

    main = importlib.import_module(f"flows.{script}").main
    with pytest.raises(SystemExit) as ended:
        main(argv)
    assert ended.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    said = "blank" if argv[-1] else "empty"
    assert last.endswith(f"error: argument {option}: the path is {said}")


# ---- the rest through .fn(): the flow's body, without a flow run (Prefect's testing guide)


def test_parity_failure_raises_and_registers_nothing(tmp_path: Path, tiny_mirror) -> None:
    mirror, sha = tiny_mirror
    workdir = make_workdir(tmp_path, str(mirror), sha, parity={"atol": 1e-15})
    with pytest.raises(StageFailed, match="stage parity failed: GateError: ONNX parity failed"):
        retrain.fn(workdir=str(workdir))
    assert registry_versions(workdir) == []
    (report,) = (workdir / "runs").glob("*/reports/parity.json")  # in the run's own folder
    assert json.loads(report.read_text())["passed"] is False


@pytest.fixture
def flaky_http_mirror(tmp_path: Path, tiny_files) -> Iterator[tuple[str, dict[str, str], list]]:
    """An HTTP mirror on 127.0.0.1 whose first request fails with 503."""
    root = tmp_path / "www"
    sha = write_mirror(root, tiny_files)
    requests: list[int] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            requests.append(1)
            if len(requests) == 1:
                self.send_error(503, "warming up")
                return
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", sha, requests
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_is_retried_after_a_failing_mirror(tmp_path: Path, flaky_http_mirror) -> None:
    url, sha, requests = flaky_http_mirror
    workdir = make_workdir(tmp_path, url, sha)
    result = retrain.fn(workdir=str(workdir))
    assert result["version"] == 1
    # 1 failed request, then the 4 files on the retry
    assert len(requests) == 5


def test_fetch_is_not_retried_when_the_mirror_answered_for_good(
    tmp_path: Path, flaky_http_mirror
) -> None:
    """The 503 is tried again; the checksum mismatch that follows is not (a retry would
    download the same file and fail the same way)."""
    url, sha, requests = flaky_http_mirror
    workdir = make_workdir(tmp_path, url, {**sha, "train-images-idx3-ubyte": "0" * 64})
    with pytest.raises(StageFailed, match="sha256 mismatch of decompressed content"):
        retrain.fn(workdir=str(workdir))
    assert len(requests) == 2  # the 503, then the file with other content: no third try


def test_unchanged_dataset_is_not_fetched_again(tmp_path: Path, flaky_http_mirror) -> None:
    url, sha, requests = flaky_http_mirror
    workdir = make_workdir(tmp_path, url, sha)
    retrain.fn(workdir=str(workdir))
    before = len(requests)
    second = retrain.fn(workdir=str(workdir), force=True)  # trains again, from the same files
    assert len(requests) == before and second["fingerprint"] and not second["up_to_date"]


def test_the_run_first_takes_in_what_other_hosts_shared(
    tmp_path: Path, tiny_mirror: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `inbox.shared`, digits another host published are in the run's ingest (the store
    failing the first try is tried again)."""
    from flows import retrain as retrain_module
    from mnist_pipeline.inbox import store
    from mnist_pipeline.inbox.shared import SharedInbox, StoreUnavailable
    from tests.example_helpers import draw_digit

    sync, tries = retrain_module.inbox_sync.sync, []

    def fails_once(*args):
        tries.append(args)
        if len(tries) == 1:
            raise StoreUnavailable("shared inbox: the store did not answer")
        return sync(*args)

    monkeypatch.setattr(retrain_module.inbox_sync, "sync", fails_once)

    mirror, sha = tiny_mirror
    location = tmp_path / "store"
    location.mkdir()
    workdir = make_workdir(tmp_path, str(mirror), sha, inbox={"shared": str(location)})
    other_host = SharedInbox(location)
    for seed in range(3):
        png = draw_digit(tmp_path / f"{seed}.png", seed).read_bytes()
        assert other_host.publish(png, seed, "png", "test")
    state = retrain(workdir=str(workdir), epochs=1, return_state=True)
    assert state.is_completed(), state.message
    assert sorted(e.label for e in store.entries(workdir / "data" / "extra")) == [0, 1, 2]
    ingested = latest_artifact(INGEST_KEY)["data"]
    counts = re.match(
        r"\*\*Labelled digits users added\*\*: (\d+) train \+ (\d+) holdout, 0 ref", ingested
    )
    assert counts is not None and int(counts[1]) + int(counts[2]) == 3, ingested
    runs = task_runs(str(state.state_details.flow_run_id))
    assert len(tries) == 2 and runs["sync-inbox"]["run_count"] == 2
    assert [w["id"] for w in runs["sync-inbox"]["task_inputs"]["wait_for"]] == [runs["fetch"]["id"]]
    assert [w["id"] for w in runs["ingest"]["task_inputs"]["wait_for"]] == [
        runs["sync-inbox"]["id"]
    ]


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("russet-dragon", "russet-dragon-5e1f00c0ffee"),
        ("../../etc", "etc-5e1f00c0ffee"),
        ("a/b c", "a-b-c-5e1f00c0ffee"),
        ("..", "run-5e1f00c0ffee"),
        ("x" * 100, "x" * 64 + "-5e1f00c0ffee"),
    ],
)
def test_a_run_folder_is_one_folder_whatever_the_run_is_named(
    monkeypatch: pytest.MonkeyPatch, name: str, folder: str
) -> None:
    from types import SimpleNamespace

    from flows import run_options

    run = SimpleNamespace(id="0193a1b2-c3d4-7e5f-8a6b-5e1f00c0ffee", name=name)
    monkeypatch.setattr(run_options, "flow_run", run)
    assert run_options.run_folder_name() == folder
    # Another run of that name started in the same minute: the same UUIDv7 time digits, its
    # own random ones, so its own folder.
    run.id = "0193a1b2-c3d4-7e5f-9c0d-0a1b2c3d4e5f"
    assert run_options.run_folder_name() == folder.replace("5e1f00c0ffee", "0a1b2c3d4e5f")


@pytest.mark.parametrize("option", ["--params", "--params-file"])
def test_flows_serve_takes_the_params_file_as_retrain_and_sweep_do(
    tmp_path: Path, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--params` as for `flows.retrain` and `flows.sweep` (and the older `--params-file`), read
    in --workdir before anything is deployed."""
    from flows.serve import main as serve_main

    with pytest.raises(SystemExit) as ended:
        serve_main(["--workdir", str(tmp_path), option, "other.yaml"])
    assert ended.value.code == 2
    assert capsys.readouterr().err == f"error: params file not found: {tmp_path / 'other.yaml'}\n"


def test_a_report_that_cannot_be_published_is_a_warning_not_the_outcome(
    tiny_workdir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The version is committed before the run's report: a Prefect API that refuses the report
    then is a warning, and the run returns the version it registered. A rejected candidate's
    report that fails leaves the stage's failure as the run's."""
    import flows.retrain as module

    def away(*args: object) -> None:
        raise ConnectionError("the API went away")

    for name in ("publish_trial", "publish_report", "publish_rejected"):
        monkeypatch.setattr(module, name, away)
    with caplog.at_level(logging.WARNING, logger="mnist_pipeline.flows"):
        result = retrain.fn(workdir=str(tiny_workdir))
    assert (result["version"], result["registered"]) == (1, True)
    assert registry_versions(tiny_workdir) == [1]
    for what in ("the trial row", "the run's report"):
        assert f"could not publish {what}: ConnectionError: the API went away" in caplog.text
    caplog.clear()
    warnings = caplog.at_level(logging.WARNING, logger="mnist_pipeline.flows")
    with warnings, pytest.raises(StageFailed, match="stage evaluate failed: GateError"):
        retrain.fn(workdir=str(tiny_workdir), min_accuracy=1.0, force=True)
    assert "could not publish the rejected candidate's report: ConnectionError" in caplog.text
    assert registry_versions(tiny_workdir) == [1]


def test_a_dataset_removed_between_fetch_and_snapshot_is_fetched_again(
    tiny_workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dvc repro --force` removes data/mnist (its fetch stage's output) just after the run's
    fetch: the run's snapshot finds files missing, fetches again and goes on."""
    import flows.retrain as module

    snapshot, calls = module.runs.snapshot_dataset, []

    def removed_first(shared: Path, target: Path, sha256: dict[str, str]) -> None:
        calls.append(sorted(p.name for p in shared.iterdir()))
        if len(calls) == 1:
            shutil.rmtree(shared)  # as DVC removes a stage's outputs before running it
        snapshot(shared, target, sha256)

    monkeypatch.setattr(module.runs, "snapshot_dataset", removed_first)
    result = retrain.fn(workdir=str(tiny_workdir))
    assert result["version"] == 1 and len(calls) == 2 and calls[0] == calls[1]


def test_a_run_of_other_data_fetches_into_its_own_folder_not_the_projects(
    tiny_workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `data.sha256` override (another dataset) must not replace the project's data/mnist,
    which DVC's fetch stage and the other runs read."""
    from mnist_pipeline.data.manifest import file_sha256
    from tests.synthetic import make_dataset

    first = retrain.fn(workdir=str(tiny_workdir))
    project_data = tiny_workdir / "data" / "mnist"
    before = {p.name: file_sha256(p) for p in project_data.iterdir()}
    other = tmp_path / "other-mirror"
    other_sha = write_mirror(other, make_dataset(seed=99))
    assert other_sha != before
    overrides = {"data.sha256": other_sha, "data.mirrors": [str(other)]}
    second = retrain.fn(workdir=str(tiny_workdir), overrides=overrides)
    assert {p.name: file_sha256(p) for p in project_data.iterdir()} == before
    run_data = Path(second["run_folder"]) / "data" / "mnist"
    assert {p.name: file_sha256(p) for p in run_data.iterdir()} == other_sha
    assert second["version"] == first["version"] + 1  # other inputs: a new version
    third = retrain.fn(workdir=str(tiny_workdir))  # the project's data again: up to date
    assert third.is_completed() and f"up to date: v{first['version']} " in third.message

    def api_down(*_: object, **__: object) -> None:
        raise ConnectionError("the Prefect API does not answer")

    import flows.retrain as module

    monkeypatch.setattr(module, "publish_up_to_date", api_down)
    monkeypatch.setattr(module, "publish_trial", api_down)
    fourth = retrain.fn(workdir=str(tiny_workdir))  # nothing to do: a report lost is a warning
    assert fourth.is_completed() and f"up to date: v{first['version']} " in fourth.message


def test_the_rejection_report_names_the_gate_that_missed_with_its_threshold() -> None:
    """A candidate that passed MNIST test and missed only the extra holdout is not reported as
    missing the test gate; each row shows the threshold evaluate applied, not today's params."""
    extra = {
        "total": 40,
        "holdout_sha256": "e" * 64,
        "extra_sha256": "x" * 64,
        "min_extra_accuracy": 0.9,
        "accuracy": 0.8,
        "correct": 32,
        "passed": False,
    }
    report = metrics_report(0.994, min_accuracy=0.98, passed=False, extra=extra)
    rows = gate_rows(Metrics.model_validate(report))
    assert rows == [
        "| test accuracy | 99/100 (99.40%) |",
        "| gate | passed: evaluate.min_accuracy 98.00% |",
        "| extra holdout accuracy | 32/40 (80.00%) |",
        "| extra holdout gate | missed: evaluate.min_extra_accuracy 90.00% |",
    ]
    alone = gate_rows(Metrics.model_validate(metrics_report(0.97, min_accuracy=0.98)))
    assert alone[1] == "| gate | missed: evaluate.min_accuracy 98.00% |" and len(alone) == 2


def test_an_ingest_artifact_cell_is_one_literal_cell() -> None:
    """A refused file's name (or a reason naming one) with a newline, a pipe or markdown in it
    would have broken the artifact's table or added rows of its own."""
    from flows.artifacts import _cell

    cell = _cell("3/a|b.png\n| `x` | **forged** |\x1b[31m")
    assert "\n" not in cell and "\x1b" not in cell
    assert "|" not in cell.replace("\\|", "") and "`" not in cell.replace("\\`", "")
    assert cell.startswith("3/a\\|b\\.png\\\\n\\| \\`x\\` \\| \\*\\*forged")
