"""`dvc repro` on tiny data: every output, no-op reruns, partial reruns, bit-identical forced runs,
and a fresh `git clone` that reproduces the committed dvc.lock exactly.

The tests build a throwaway git + DVC repo of the project on a tiny synthetic mirror
(tests/dvc_helpers.py) and run the real `mnist-pipeline` commands through DVC.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.data.dataset import load_mnist
from mnist_pipeline.registry import Registry
from tests.conftest import REPO_ROOT, unavailable
from tests.dvc_helpers import dvc_env, lock_hashes, make_project, ran, run
from tests.example_helpers import CHROMIUM, CHROMIUM_ARGS, chromium_skip_reason
from tests.process_helpers import start, stop, wait_for
from tests.registry_helpers import WAIT_FOR_HELD_LOCK, registrations_held, stored
from tests.test_dvc import DVC_STAGES, PACKAGE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A repo after a full `dvc repro` (dvc.lock committed) and that run's output."""
    base = tmp_path_factory.mktemp("dvc")
    repo = base / "repo"
    make_project(repo, base / "mirror")
    output = run(repo, "dvc", "repro")
    run(repo, "git", "add", "dvc.lock")
    run(repo, "git", "commit", "-q", "-m", "pipeline run")
    return repo, output


@pytest.fixture
def clone(pipeline: tuple[Path, str], tmp_path: Path) -> Path:
    """A private copy of the pipeline repo (workspace, git history and DVC cache)."""
    repo = tmp_path / "repo"
    shutil.copytree(pipeline[0], repo, symlinks=True)
    return repo


def test_full_run_produces_every_output(pipeline: tuple[Path, str]) -> None:
    repo, output = pipeline
    assert ran(output) == set(DVC_STAGES)
    layout = Layout(repo)
    for path in (layout.state_dict, layout.onnx, layout.train_history, layout.predictions):
        assert path.is_file(), path
    assert not layout.checkpoint.exists()
    assert sorted(p.name for p in layout.plots.iterdir()) == [
        "confusion_matrix.png",
        "correct.png",
        "misclassified.png",
        "reliability.png",
        "robustness.png",
        "training_curves.png",
    ]
    assert json.loads(layout.metrics.read_text())["passed"] is True
    assert json.loads(layout.parity_report.read_text())["passed"] is True
    hashes = lock_hashes(repo)
    assert set(hashes) == {
        "data/extra",
        "data/mnist",
        "data/ingested",
        "reports/ingest.json",
        "models/model.pt",
        "models/model.json",
        "reports/train_history.csv",
        "reports/metrics.json",
        "reports/scores.json",
        "reports/predictions.csv",
        "reports/plots",
        "models/model.onnx",
        "reports/parity.json",
        "reports/parity_scores.json",
    }
    assert hashes["data/mnist"].endswith(".dir")


def test_second_repro_runs_nothing(pipeline: tuple[Path, str]) -> None:
    repo, _ = pipeline
    output = run(repo, "dvc", "repro")
    assert ran(output) == set()
    assert "Data and pipelines are up to date." in output
    assert "up to date" in run(repo, "dvc", "status")


def test_metrics_and_plots_show(pipeline: tuple[Path, str]) -> None:
    repo, _ = pipeline
    shown = json.loads(run(repo, "dvc", "metrics", "show", "--json"))
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    data = shown[""]["data"]["reports/scores.json"]["data"]
    assert (data["accuracy"], data["loss"]) == (metrics["accuracy"], metrics["loss"])
    parity = shown[""]["data"]["reports/parity_scores.json"]["data"]
    assert parity["argmax_mismatches"] == 0 and parity["passed"] is True
    table = run(repo, "dvc", "metrics", "show").splitlines()
    assert table and max(len(line) for line in table) <= 120, table  # headline numbers only
    plots = json.loads(run(repo, "dvc", "plots", "show", "--json"))["data"]
    assert {"Loss", "Accuracy", "Confusion matrix"} <= set(plots)
    assert "reports/plots/misclassified.png" in plots
    assert plots["reports/plots/misclassified.png"][0]["type"] == "image"
    # Rows are the true digit, as in the PNG confusion matrix, on a log colour scale.
    confusion = plots["Confusion matrix"][0]["content"]["spec"]
    assert (confusion["encoding"]["y"]["field"], confusion["encoding"]["x"]["field"]) == (
        "actual",
        "predicted",
    )
    assert confusion["layer"][0]["encoding"]["color"]["scale"]["type"] == "symlog"
    # Epochs are categories (1, 2, ...), in numeric order, not a continuous 1.0, 1.1, ... axis.
    loss = plots["Loss"][0]["content"]
    assert loss["encoding"]["x"] == {
        "field": "step",
        "type": "ordinal",
        "title": "epoch",
        "axis": {"labelAngle": 0},
    }
    assert loss["transform"] == [{"calculate": "toNumber(datum['epoch'])", "as": "step"}]
    # The model is declared as a DVC artifact (dvc.yaml `artifacts:`).
    declared = yaml.safe_load((repo / "dvc.yaml").read_text())["artifacts"]["mnist-cnn"]
    assert declared["type"] == "model" and (repo / declared["path"]).is_file()


def test_changing_the_gate_reruns_only_evaluation_onwards(clone: Path) -> None:
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["evaluate"]["min_accuracy"] = 0.001
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = lock_hashes(clone)
    stages = ran(run(clone, "dvc", "repro"))
    assert "evaluate" in stages
    assert not stages & {"fetch", "train"}
    after = lock_hashes(clone)
    assert after["models/model.pt"] == before["models/model.pt"]
    assert after["reports/metrics.json"] != before["reports/metrics.json"]  # records the gate


def test_changing_how_to_download_keeps_the_dataset(clone: Path) -> None:
    """A new socket timeout and mirror list change where and how fetch downloads, not what it
    accepts (data.sha256): nothing re-runs, so nothing is deleted and downloaded again (with
    no mirror reachable, the dataset would be gone). When a change to its code re-runs fetch,
    DVC keeps its output (`persist`), and the files that verify are not downloaded again."""
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["data"].update(timeout_s=5.0, mirrors=[str(clone / "no-such-mirror")])
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = lock_hashes(clone)
    assert ran(run(clone, "dvc", "repro")) == set()
    assert lock_hashes(clone) == before
    assert "up to date" in run(clone, "dvc", "status")
    dataset = {path.name: path.read_bytes() for path in (clone / "data" / "mnist").iterdir()}
    with (clone / PACKAGE / "core" / "service_params.py").open("a") as code:
        code.write("# a change to code fetch imports: fetch re-runs\n")
    assert ran(run(clone, "dvc", "repro", "fetch")) == {"fetch"}  # its files verify: kept
    assert {path.name: path.read_bytes() for path in (clone / "data" / "mnist").iterdir()} == (
        dataset
    )
    params["data"]["sha256"]["t10k-labels-idx1-ubyte"] = "0" * 64  # other data: fetch re-runs
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "fetch" in run(clone, "dvc", "status")


def test_forced_repro_is_bit_identical(clone: Path) -> None:
    """Every output DVC tracks is a function of the inputs: weights, history, records, reports,
    plots, ONNX (wall-clock time goes to reports/train_timings.csv, which DVC does not track)."""
    before = lock_hashes(clone)
    shutil.rmtree(clone / "reports")  # nothing left over from the first run
    output = run(clone, "dvc", "repro", "--force")
    assert ran(output) == set(DVC_STAGES)
    assert lock_hashes(clone) == before
    assert run(clone, "git", "status", "--porcelain") == ""  # dvc.lock as committed


def test_a_fresh_clone_runs_plain_dvc_repro(pipeline: tuple[Path, str], tmp_path: Path) -> None:
    """`git clone` then exactly `dvc repro` (no mkdir, no `dvc pull`, no cache): the inbox a
    clone lacks is created empty, every stage runs and dvc.lock comes out as committed."""
    origin, _ = pipeline
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    assert not (clone / "data" / "extra").exists() and not (clone / ".dvc" / "cache").exists()
    output = run(clone, "dvc", "repro")
    assert ran(output) == set(DVC_STAGES)
    layout = Layout(clone)
    assert layout.inbox.is_dir() and not any(layout.inbox.iterdir())
    for path in (layout.state_dict, layout.onnx, layout.train_history, layout.parity_report):
        assert path.is_file(), path
    assert json.loads(layout.metrics.read_text())["passed"] is True
    assert lock_hashes(clone) == lock_hashes(origin)  # bit-identical on another clone
    assert run(clone, "git", "status", "--porcelain") == ""
    assert "up to date" in run(clone, "dvc", "status")


def test_experiment_with_a_train_param(clone: Path) -> None:
    output = run(clone, "dvc", "exp", "run", "-S", "train.epochs=2")
    stages = ran(output)
    assert "train" in stages and "fetch" not in stages
    name = re.search(r"Ran experiment\(s\): (\S+)", output).group(1)  # type: ignore[union-attr]
    assert name in run(clone, "dvc", "exp", "show", "--no-pager", "--csv")  # a table truncates
    rows = json.loads(run(clone, "dvc", "exp", "show", "--json"))
    exps = [e for row in rows for group in row.get("experiments") or [] for e in group["revs"]]
    (exp,) = [e for e in exps if e["name"] == name]
    assert exp["data"]["params"]["params.yaml"]["data"]["train"]["epochs"] == 2
    assert "accuracy" in exp["data"]["metrics"]["reports/scores.json"]["data"]
    # Two experiments side by side fit a 120-column terminal when the changed file hashes are
    # dropped (README): no column is cut off (DVC marks cut columns with an ellipsis).
    show = ["dvc", "exp", "show", "--no-pager", "--only-changed", "--drop", ".*/.*"]
    table = subprocess.run(
        show, cwd=clone, env=dvc_env(clone) | {"COLUMNS": "120"}, capture_output=True, text=True
    ).stdout
    assert "train.epochs" in table and "accuracy" in table, table
    assert "…" not in table and max(len(line) for line in table.splitlines()) <= 120, table


def test_push_puts_the_dataset_in_a_remote(clone: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    run(clone, "dvc", "remote", "add", "-d", "local", str(remote))
    run(clone, "dvc", "push")
    for path in sorted((clone / "data" / "mnist").iterdir()):
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        assert (remote / "files" / "md5" / md5[:2] / md5[2:]).is_file(), path.name
    onnx_md5 = lock_hashes(clone)["models/model.onnx"]
    assert (remote / "files" / "md5" / onnx_md5[:2] / onnx_md5[2:]).is_file()


def start_retraining(repo: Path, log: Path) -> subprocess.Popen:
    """The retraining flow (epochs=2) in `repo`, on a temporary Prefect server of its own,
    waiting for the registry's lock as long as a test holds it."""
    code = WAIT_FOR_HELD_LOCK + "import sys; from flows.retrain import retrain; "
    code += "retrain(workdir=sys.argv[1], epochs=2)"
    env = {k: v for k, v in dvc_env(repo).items() if k != "PREFECT_API_URL"}
    env["PYTHONPATH"] += os.pathsep + str(REPO_ROOT)  # flows/ (not copied into the repo)
    env |= {
        "PREFECT_HOME": str(log.parent / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # 20 s is short on 2 busy cores
    }
    return start([sys.executable, "-c", code, str(repo)], env, log, repo)


def reached(repo: Path, step: str) -> bool:
    """Whether the flow in `repo` is about to fetch (its run folder exists) or to train (its
    run folder holds its snapshot of the four dataset files)."""
    runs = list((repo / "runs").glob("*"))
    if step == "fetch":
        return bool(runs)
    return any(len(list(Layout(run).data_dir.glob("*"))) == 4 for run in runs)


@pytest.mark.parametrize("step", ["fetch", "train"])
def test_a_flow_run_and_a_forced_repro_in_one_checkout_both_succeed(
    clone: Path, tmp_path: Path, step: str
) -> None:
    """`dvc repro --force` (which deletes and rewrites data/, models/, reports/) started when a
    retraining flow in the same checkout is about to `step`: neither disturbs the other. The
    registry's lock is held until the repro has finished, so the flow cannot finish first."""
    registry, log = Registry(clone / "registry", "mnist-cnn"), tmp_path / "flow.log"
    flow = None
    try:
        with registrations_held(registry):
            flow = start_retraining(clone, log)
            wait_for(lambda: reached(clone, step), 240, f"the flow's {step}", flow, log, 0.05)
            repro = run(clone, "dvc", "repro", "--force")
            repro_ended = time.time()
            assert flow.poll() is None, log.read_text()[-4000:]  # it ran all along the repro
        flow.wait(timeout=300)
    finally:
        if flow is not None:
            stop(flow)
    assert flow.returncode == 0, log.read_text()[-4000:]
    assert ran(repro) == set(DVC_STAGES)
    assert "up to date" in run(clone, "dvc", "status")  # dvc.lock describes the workspace
    assert registry.verify() == []
    (card,) = registry.versions()  # the flow's version, made from its own run folder
    assert stored(registry, 1, "card.json").stat().st_mtime > repro_ended  # they overlapped
    assert card["params"]["train"]["epochs"] == 2
    session = ort.InferenceSession(
        str(registry.fetch(1, "model.onnx")), providers=["CPUExecutionProvider"]
    )
    mnist = load_mnist(Layout(clone).data_dir)
    pixels = (mnist.test_images.numpy()[:, None] / 255.0).astype(np.float32)
    predicted = session.run(["probabilities"], {"image": pixels})[0].argmax(1)
    accuracy = float((predicted == mnist.test_labels.numpy()).mean())
    assert accuracy == card["metrics"]["accuracy"]


def test_the_plots_page_renders_offline(pipeline: tuple[Path, str]) -> None:
    """`dvc plots show` writes a page whose Vega comes from plots/node_modules, not a CDN: in
    Chromium with every request off 127.0.0.1 refused, the three charts render."""
    if reason := chromium_skip_reason() or (
        None
        if (REPO_ROOT / "plots" / "node_modules" / "vega").is_dir()
        else "plots/node_modules is missing: run `npm ci --prefix plots`"
    ):
        unavailable(reason)
    from playwright.sync_api import sync_playwright

    repo, _ = pipeline
    run(repo, "dvc", "plots", "show")
    page_html = (repo / "reports" / "dvc_plots" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page_html and "../../plots/node_modules/vega" in page_html
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(repo))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    refused: list[str] = []

    def only_local(route) -> None:
        if route.request.url.startswith(origin + "/"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            context = browser.new_context()
            context.route("**/*", only_local)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{origin}/reports/dvc_plots/index.html")
            charts = "document.querySelectorAll('.vega-embed svg, .vega-embed canvas').length"
            page.wait_for_function(f"() => {charts} >= 3", timeout=60_000)
            titles = page.locator(".vega-embed").count()
            assert page.locator("#no-vega").is_hidden()
            bare = context.new_page()  # as before `npm ci --prefix plots`
            bare.route("**/plots/node_modules/**", lambda route: route.fulfill(status=404))
            bare.goto(f"{origin}/reports/dvc_plots/index.html")
            told = bare.locator("#no-vega")
            told.wait_for(state="visible", timeout=30_000)
            assert "npm ci --prefix plots" in told.inner_text()
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    assert titles == 3 and errors == [] and refused == []
