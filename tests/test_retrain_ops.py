"""Retraining an operator can trust: idempotent, isolated, noisy on failure (Prefect harness)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from filelock import FileLock
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

from flows.retrain import retrain
from flows.trials import read_trial
from mnist_pipeline.core.errors import ParamsError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.data.dataset import load_mnist
from mnist_pipeline.pipeline import runs
from mnist_pipeline.registry import Registry
from tests.conftest import REPO_ROOT
from tests.flow_helpers import latest_artifact, make_workdir, registry_versions
from tests.notify_helpers import webhook_block
from tests.process_helpers import free_port, start, stop
from tests.registry_helpers import WAIT_FOR_HELD_LOCK, registrations_held, stored
from tests.synthetic import make_dataset, write_mirror

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_unchanged_inputs_train_nothing_unless_forced(tiny_workdir: Path) -> None:
    first = retrain.fn(workdir=str(tiny_workdir))
    again = retrain(workdir=str(tiny_workdir), return_state=True)
    assert again.is_completed() and again.message == "up to date: v1 has the same inputs"
    assert again.result() == {"up_to_date": True, "version": 1, "fingerprint": first["fingerprint"]}
    with get_client(sync_client=True) as client:  # what a sweep reads of its registering run
        assert read_trial(client, again.state_details.flow_run_id) == again.result()
    assert registry_versions(tiny_workdir) == [1]
    report = latest_artifact("mnist-retrain-report")
    assert report is not None and "up to date" in report["data"] and "v1" in report["data"]
    # Forced: it trains again; training is deterministic here (same machine, 1 thread), so the
    # files are v1's and no duplicate version is made.
    forced = retrain.fn(workdir=str(tiny_workdir), force=True)
    assert forced["up_to_date"] is False and forced["registered"] is False
    assert forced["version"] == 1 and forced["fingerprint"] == first["fingerprint"]
    assert Path(forced["run_folder"], "models", "model.pt").is_file()
    changed = retrain.fn(workdir=str(tiny_workdir), epochs=2)  # another input: a real retraining
    assert changed["version"] == 2 and changed["registered"] is True
    cards = Registry(tiny_workdir / "registry", "mnist-cnn").versions()
    assert [c["fingerprint"]["sha256"] == first["fingerprint"] for c in cards] == [1, 0]


def test_run_folders_are_pruned_to_keep_runs(tiny_workdir: Path) -> None:
    for epochs in (1, 2, 3):
        retrain.fn(workdir=str(tiny_workdir), epochs=epochs)
    params = (tiny_workdir / "params.yaml").read_text()
    (tiny_workdir / "params.yaml").write_text(params + "schedule:\n  keep_runs: 2\n")
    last = retrain.fn(workdir=str(tiny_workdir), epochs=4)
    kept = sorted((tiny_workdir / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    assert len(kept) == 2 and kept[-1] == Path(last["run_folder"])


def test_bad_override_fails_before_any_work(tiny_workdir: Path) -> None:
    state = retrain(workdir=str(tiny_workdir), epochs=0, return_state=True)
    assert state.is_failed() and "train.epochs" in state.message
    assert not (tiny_workdir / "runs").exists() and not (tiny_workdir / "data").exists()
    with pytest.raises(ParamsError, match="train.epochs"):
        retrain.fn(workdir=str(tiny_workdir), epochs=0)


def onnx_accuracy(onnx: Path, data_dir: Path) -> float:
    """Accuracy of an ONNX model on the test split in `data_dir`, recomputed from scratch."""
    mnist = load_mnist(data_dir)
    pixels = (mnist.test_images.numpy()[:, None] / 255.0).astype(np.float32)
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    predicted = session.run(["probabilities"], {"image": pixels})[0].argmax(1)
    return float((predicted == mnist.test_labels.numpy()).mean())


def start_flow(workdir: Path, epochs: int, log: Path) -> subprocess.Popen:
    """A flow process retraining `workdir` with `epochs`, its output in `log` (its registration
    waits for the registry's lock as long as a test holds it)."""
    code = WAIT_FOR_HELD_LOCK + "import sys; from flows.retrain import retrain; "
    code += "retrain(epochs=int(sys.argv[1]), workdir=sys.argv[2])"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO_ROOT)}
    return start([sys.executable, "-c", code, str(epochs), str(workdir)], env, log, REPO_ROOT)


def checked_models(workdir: Path, procs: list[subprocess.Popen], logs: list[Path]) -> list[Path]:
    """Wait until each flow's run folder holds a parity report (trained, exported, checked: the
    next step is registering); fail at once if a flow exits first."""
    deadline, count = time.monotonic() + 300, len(procs)
    while len(found := sorted(workdir.glob("runs/*/reports/parity.json"))) < count:
        for proc, log in zip(procs, logs, strict=True):
            assert proc.poll() is None, f"a flow exited before registering:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"only {len(found)} of {count} runs checked a model"
        time.sleep(0.2)
    return found


def run_flows_at_once(workdir: Path, epochs: list[int]) -> list[str]:
    """One flow process per entry of `epochs` in `workdir`, made to overlap: the registry's
    lock is held until every run has checked its model, then all register at once; asserts
    no version was committed before every run was ready. Returns their outputs."""
    registry = Registry(workdir / "registry", "mnist-cnn")
    logs = [workdir.parent / f"flow{i}.log" for i in range(len(epochs))]
    procs: list[subprocess.Popen] = []
    try:
        with registrations_held(registry):
            procs += [start_flow(workdir, n, log) for n, log in zip(epochs, logs, strict=True)]
            reports = checked_models(workdir, procs, logs)
        for proc in procs:
            proc.wait(timeout=300)
    finally:
        for proc in procs:
            stop(proc)
    outputs = [log.read_text() for log in logs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-3000:]
    cards = [stored(registry, v, "card.json") for v in registry.version_numbers()]
    last_ready = max(p.stat().st_mtime_ns for p in reports)
    assert cards and all(last_ready < c.stat().st_mtime_ns for c in cards)  # they overlapped
    return outputs


def test_identical_runs_at_once_register_one_version(tiny_workdir: Path) -> None:
    """Both find nothing registered and train; the registry's lock lets one register, and the
    other, registering the same files, is told v1 holds them (not "up to date": that is what
    a run that started after v1 was registered says)."""
    outputs = run_flows_at_once(tiny_workdir, [1, 1])
    assert registry_versions(tiny_workdir) == [1]
    said = "\n".join(outputs)
    assert said.count("registered mnist-cnn v1") == 1
    assert said.count("nothing registered: v1 has the same") == 1
    assert "up to date" not in said


def test_overlapping_runs_in_one_checkout_each_register_their_own_model(tiny_workdir: Path) -> None:
    """Two flow processes at once in the same folder, with different params."""
    run_flows_at_once(tiny_workdir, [1, 3])
    registry = Registry(tiny_workdir / "registry", "mnist-cnn")
    cards = registry.versions()
    assert sorted(c["params"]["train"]["epochs"] for c in cards) == [1, 3]
    data_dir = Layout(tiny_workdir).data_dir
    for card in cards:
        version = card["version"]
        assert registry.verify() == []
        assert card["metrics"]["accuracy"] == onnx_accuracy(
            registry.fetch(version, "model.onnx"), data_dir
        )
        assert card["parity"]["onnx_sha256"] == card["files"]["model.onnx"]


# ---- failure notification through a Prefect notification block


def test_a_failed_run_notifies_once_and_a_good_run_only_says_why_it_started(
    tiny_workdir: Path, receiver
) -> None:
    url, received = receiver
    slug = webhook_block(url, "mnist-failures")
    bad = retrain(workdir=str(tiny_workdir), notify_block=slug, min_accuracy=1.0, return_state=True)
    assert bad.is_failed()
    assert len(received) == 1, received
    reason = "live traffic drifted from MNIST test: v1: PSI ink 4.2 over 0.25"
    good = retrain(workdir=str(tiny_workdir), notify_block=slug, reason=reason, return_state=True)
    assert good.is_completed() and len(received) == 2  # no failure: only why it started
    message, started = received
    assert message["subject"].startswith("mnist-retrain run ") and "failed" in message["subject"]
    assert "stage evaluate failed" in message["body"] and "below" in message["body"]
    assert started["subject"].endswith(" started")
    assert started["body"] == f"started because: {reason}"


def test_a_notifier_that_is_down_does_not_change_the_outcome(
    tiny_workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    slug = webhook_block(f"http://127.0.0.1:{free_port()}/nobody", "mnist-down")
    with caplog.at_level(logging.ERROR, logger="mnist_pipeline.notify"):
        state = retrain(
            workdir=str(tiny_workdir), notify_block=slug, min_accuracy=1.0, return_state=True
        )
    assert state.is_failed() and "stage evaluate failed" in state.message
    assert any("could not notify custom-webhook/mnist-down" in r.message for r in caplog.records)
    # Prefect keeps the failure (and its traceback); the run's folder lock is released anyway,
    # so a retry of the run in this process, or a later prune, is not held up by it.
    (folder,) = (tiny_workdir / "runs").iterdir()
    assert (folder / runs.RUNNING_LOCK).exists()
    with FileLock(folder / runs.RUNNING_LOCK, timeout=0):  # Timeout if the run still held it
        pass


@pytest.mark.parametrize("reason", [None, "live traffic drifted"])
def test_a_notify_block_that_cannot_be_loaded_is_logged_when_the_run_starts(
    tiny_workdir: Path, caplog: pytest.LogCaptureFixture, reason: str | None
) -> None:
    """A typo in notify_block is told at once, by a run that succeeds, not first by the
    failure that would have needed it; so it is by a run an event started (with a reason)."""
    typo = "custom-webhook/mnist-typo"
    with caplog.at_level(logging.ERROR, logger="mnist_pipeline.notify"):
        state = retrain(
            workdir=str(tiny_workdir), notify_block=typo, reason=reason, return_state=True
        )
    assert state.is_completed()
    (told,) = [r.message for r in caplog.records if r.name == "mnist_pipeline.notify"]
    assert told.startswith("notify_block custom-webhook/mnist-typo cannot be used (")
    assert told.endswith("): a failure of this run would notify no one")


def test_a_block_that_cannot_be_loaded_outside_a_flow_run_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`retrain.fn()` has no run to log into: the check says so in the module's log."""
    from flows import notify

    def missing(slug: str) -> None:
        raise ValueError(f"Unable to find block document named {slug}")

    monkeypatch.setattr(notify.Block, "load", missing)
    with caplog.at_level(logging.ERROR, logger="mnist_pipeline.notify"):
        assert notify.check_block("custom-webhook/mnist-typo") is False
    assert "notify_block custom-webhook/mnist-typo cannot be used" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="mnist_pipeline.notify"):
        assert notify.check_block("garbage") is False  # the form said, not Python's unpacking
    assert (
        "notify_block garbage cannot be used (not of the form block-type/block-name, "
        "in lowercase letters, digits and dashes)"
    ) in caplog.text
    caplog.clear()

    class Secret:  # what Block.load gives for a block of a type that cannot notify
        value = "x"

    monkeypatch.setattr(notify.Block, "load", lambda slug: Secret())
    with caplog.at_level(logging.ERROR, logger="mnist_pipeline.notify"):
        assert notify.check_block("secret/not-a-notifier") is False
    assert (
        "notify_block secret/not-a-notifier cannot be used (a Secret block, not a notification "
        "block): a failure of this run would notify no one"
    ) in caplog.text


def test_a_run_killed_mid_training_leaves_other_runs_and_the_registry_alone(
    tmp_path: Path,
) -> None:
    """SIGKILL during training; the next run restarts from scratch in a new folder."""
    mirror = tmp_path / "mirror"
    sha = write_mirror(mirror, make_dataset(n_train=3072, n_test=64))
    workdir = make_workdir(tmp_path, str(mirror), sha, train={"epochs": 6, "batch_size": 16})
    code = "import sys; from flows.retrain import retrain; retrain(workdir=sys.argv[1])"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(workdir)], env=env, cwd=REPO_ROOT)
    try:  # killed also when no checkpoint appears: it must not train on beside later tests
        deadline = time.monotonic() + 120
        while not list(workdir.glob("runs/*/models/checkpoint.pt")) and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    (killed,) = (workdir / "runs").iterdir()
    before = sorted(p.relative_to(killed) for p in killed.rglob("*"))
    assert registry_versions(workdir) == []
    done = retrain.fn(workdir=str(workdir), epochs=1)
    assert done["version"] == 1 and Path(done["run_folder"]) != killed
    assert sorted(p.relative_to(killed) for p in killed.rglob("*")) == before  # untouched
    assert not (killed / "models" / "model.onnx").exists()
    assert registry_versions(workdir) == [1]
