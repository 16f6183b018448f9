"""The sweep: its grid checks and best pick on tiny data, a trial run against Prefect's test
harness, and the whole sweep for real: prefect.yaml deployed from a git daemon to a Prefect
server on PostgreSQL, two process workers each in its own folder, a grid of three tiny configs
on real MNIST and one that fails on the workers."""

from __future__ import annotations

import csv
import io
import json
import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Completed, Failed, Running, Scheduled

from flows import child_runs
from flows import sweep as sweep_module
from flows.retrain import retrain
from flows.sweep import sweep
from flows.trials import TRIAL_KEY, read_trial
from mnist_pipeline.core.errors import ParamsError, PipelineError
from mnist_pipeline.pipeline.sweep import (
    MAX_CONFIGS,
    Registered,
    Trial,
    check_grid,
    pick_best,
    registering_outcome,
    summary_lines,
)
from mnist_pipeline.registry import Registry
from tests.conftest import REPO_ROOT, unavailable
from tests.flow_helpers import latest_artifact, task_runs
from tests.process_helpers import git_daemon, prefect_server, start, stop
from tests.test_prefect_yaml import git, smoke_params
from tests.test_scale_out import postgres, worker_of  # noqa: F401  (postgres: a fixture)

BIN = Path(sys.executable).parent
WORKERS = ("sweep-1", "sweep-2")


def test_check_grid_gives_each_config_its_params(tiny_workdir: Path) -> None:
    grid = [{"train.learning_rate": 0.002}, {}, {"train.epochs": 7, "model.arch": "wide"}]
    checked = check_grid(grid, tiny_workdir / "params.yaml")
    assert [config for config, _ in checked] == grid
    assert [p.train.learning_rate for _, p in checked] == [0.002, 0.001, 0.001]
    assert checked[2][1].train.epochs == 7 and checked[2][1].model.arch == "wide"
    assert checked[1][1].train.val_size == 32  # the rest from the params file


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ([], r"sweep grid is empty: give at least one config"),
        (
            [{"train.learning_rate": 1e-4 * (i + 1)} for i in range(65)],
            r"sweep grid has 65 configs, more than 64: each is a full training run",
        ),
        ({"train.seed": 1}, "sweep grid: expected a list of configs"),
        ([{}, 3], r"sweep grid\[1\]: expected a mapping of dotted params, got 3"),
        # a huge value is quoted cut short, not in full (the line stays readable)
        (
            {f"k{i}": i for i in range(50_000)},
            r"expected a list of configs, got \{'k0': 0, .*\.\.\.",
        ),
        (
            ["x" * 200_000],
            r"sweep grid\[0\]: expected a mapping of dotted params, got 'xxx.*\.\.\.",
        ),
        ([{"y" * 200_000: 1}], r"sweep grid\[0\]: 'y+\.\.\.y+': a sweep varies only model"),
        (
            [{"registry.root": "/x"}],
            r"sweep grid\[0\]: 'registry.root': a sweep varies only model.",
        ),
        ([{"epochs": 2}], r"sweep grid\[0\]: 'epochs': a sweep varies only model\.\*, train.*"),
        ([{}, {"train.epoch": 2}], r"sweep grid\[1\]: .*train.epoch: unknown key"),
        ([{"train.epochs": 0}], r"sweep grid\[0\]: .*train.epochs: Input should be greater than"),
        ([{"model.arch": "huge"}], r"sweep grid\[0\]: .*model.arch: Input should be 'classic'"),
        ([{"train.val_size": 0, "train.temperature_scaling": False}], r"train.val_size is 0"),
        ([{}, {"train.seed": 1}], r"sweep grid\[1\]: trains the same as grid\[0\]"),
        (
            [{}, {"train.seed": 2}],
            r"sweep grid\[1\]: train.seed 2 and train.val_size 32 hold out other validation "
            r"images than grid\[0\]'s \(1, 32\)",
        ),
        ([{}, {"train.val_size": 16}], r"grid\[1\]: .* hold out other validation images"),
        (
            [{"train.dropout": 0.5}, {"train.dropout": None}],
            r"sweep grid\[1\]: trains the same as grid\[0\]",
        ),
        (
            [
                {"model.arch": "wide", "train.dropout": None},
                {"model.arch": "wide", "train.dropout": 0.2},
            ],
            r"sweep grid\[1\]: trains the same as grid\[0\]",
        ),
        (  # a constant schedule has no peak and no warm-up
            [
                {"train.lr_schedule": "constant", "train.max_learning_rate": 0.01},
                {"train.lr_schedule": "constant", "train.max_learning_rate": 0.02},
            ],
            r"sweep grid\[1\]: trains the same as grid\[0\]",
        ),
        (  # augmentation off: its settings do nothing
            [
                {"train.augment.enabled": False, "train.augment.rotate_deg": 5},
                {"train.augment.enabled": False, "train.augment.rotate_deg": 15},
            ],
            r"sweep grid\[1\]: trains the same as grid\[0\]",
        ),
        (  # onecycle cycles Adam's beta1 itself (docs/params.md)
            [{"train.adam_betas": [0.9, 0.999]}, {"train.adam_betas": [0.7, 0.999]}],
            r"sweep grid\[1\]: trains the same as grid\[0\]",
        ),
        (  # a temperature changes no prediction, so no validation accuracy
            [{"train.temperature_scaling": True}, {"train.temperature_scaling": False}],
            r"sweep grid\[1\]: trains the same as grid\[0\]",
        ),
    ],
)
def test_check_grid_refuses_a_bad_grid_in_one_line(
    tiny_workdir: Path, grid: object, message: str
) -> None:
    with pytest.raises(ParamsError, match=message) as refused:
        check_grid(grid, tiny_workdir / "params.yaml")
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 400


def test_a_grid_of_as_many_configs_as_allowed_is_one(tiny_workdir: Path) -> None:
    grid = [{"train.learning_rate": 1e-5 * (i + 1)} for i in range(MAX_CONFIGS)]
    assert len(check_grid(grid, tiny_workdir / "params.yaml")) == MAX_CONFIGS == 64


def test_a_bad_grid_fails_the_sweep_before_any_child_starts(
    tiny_workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[object] = []
    monkeypatch.setattr(sweep_module, "start_child", lambda *args: started.append(args))
    with pytest.raises(ParamsError, match=r"grid\[2\]: .*train.batch_size"):
        sweep.fn(
            grid=[{}, {"train.epochs": 2}, {"train.batch_size": "big"}], workdir=str(tiny_workdir)
        )
    assert started == []


def test_a_bad_grid_file_is_one_line_before_prefect_starts(
    tiny_workdir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flows_run: list[object] = []
    monkeypatch.setattr(sweep_module, "sweep", lambda **kwargs: flows_run.append(kwargs))
    monkeypatch.chdir(tiny_workdir)
    params = "params.yaml"  # each child reads it in its own clone: a path inside the project
    files = {
        "dup.yaml": ("- {train.seed: 1, train.seed: 2}\n", "not valid YAML (line 1, column 19): "),
        "map.yaml": ("train.epochs: 3\n", "sweep grid: expected a list of configs"),
        "bad.yaml": ("- {train.epochs: -1}\n", "sweep grid[0]: override train.epochs: Input"),
        "none.yaml": (None, "cannot read it"),
    }
    for name, (text, message) in files.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(SystemExit) as exited:
            sweep_module.main([str(tmp_path / name), "--params", params])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert flows_run == []  # refused before any flow (and Prefect's server) started
    grid = tmp_path / "ok.yaml"
    grid.write_text("- {train.learning_rate: 0.002}\n- {}\n")
    for outside in (str(tiny_workdir / "params.yaml"), "../params.yaml"):  # this machine's
        assert "not a path inside the project" in sweep_module.params_path_warning(outside)
    assert sweep_module.params_path_warning("recipes/quick.yaml") is None
    assert sweep_module.read_grid(grid) == [{"train.learning_rate": 0.002}, {}]
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}), pytest.raises(SystemExit) as end:
        sweep_module.main([str(grid), "--params", params])  # a temporary server: no deployments
    assert end.value.code == 1 and flows_run == []
    assert "no Prefect API configured (set PREFECT_API_URL)" in capsys.readouterr().err
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        sweep_module.main([str(grid), "--params", params])
    assert flows_run == [{"grid": [{"train.learning_rate": 0.002}, {}], "params_file": params}]


def test_a_bad_params_file_is_named_not_blamed_on_a_config(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"^params file not found: .*none\.yaml$"):
        check_grid([{}], tmp_path / "none.yaml")
    (tmp_path / "params.yaml").write_text("train:\n  epoch: 3\n")
    with pytest.raises(ParamsError, match=r"^\S*params\.yaml: train\.epoch: unknown key"):
        check_grid([{}], tmp_path / "params.yaml")


def test_a_timeout_that_is_not_positive_fails_before_any_child_starts(
    tiny_workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[object] = []
    monkeypatch.setattr(sweep_module, "start_child", lambda *args: started.append(args))
    for timeout in (0, -5, float("nan")):  # NaN: `now > t + nan` never, a wait without end
        with pytest.raises(ParamsError, match=f"timeout_s must be .* > 0, got {timeout}"):
            sweep.fn(grid=[{}], workdir=str(tiny_workdir), timeout_s=timeout)
    assert started == []


def test_a_deployment_of_another_flow_fails_before_any_child_starts(
    tiny_workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep's own deployment as the registering one trained every trial, then failed on
    Prefect's 409 (its parameters are not the retraining flow's)."""
    started: list[object] = []
    monkeypatch.setattr(sweep_module, "start_child", lambda *args: started.append(args))
    for which, name in [
        ("register_deployment", "mnist-sweep/sweep"),
        ("trial_deployment", "mnist-sweep/sweep"),
        ("trial_deployment", "trial"),  # no flow name
        ("trial_deployment", "mnist-retrain"),  # no deployment name
        ("register_deployment", "mnist-retrain/"),
    ]:
        with pytest.raises(ParamsError, match=f"sweep: {which} '{name}' is not a deployment of"):
            sweep.fn(grid=[{}], workdir=str(tiny_workdir), **{which: name})
    assert started == []


def trial(index: int, accuracy: float | None, error: str | None = None) -> Trial:
    return Trial(index, {"train.seed": index}, val_accuracy=accuracy, error=error)


def test_pick_best_by_validation_accuracy_ties_to_the_earliest() -> None:
    trials = [trial(0, 0.91), trial(1, 0.95), trial(2, 0.95), trial(3, 0.93)]
    assert pick_best(trials).index == 1
    assert pick_best(list(reversed(trials))).index == 1  # by grid order, not arrival
    lines = summary_lines(trials, pick_best(trials))
    assert lines[1] == "* grid[1] {'train.seed': 1}: val accuracy 0.9500"
    assert lines[2].startswith("  grid[2]")


def test_pick_best_leaves_failures_out_and_fails_only_when_none_succeeded() -> None:
    failed = trial(0, None, "run a Crashed")
    trials = [failed, trial(1, 0.90), trial(2, None, "run c Failed: stage train failed: boom")]
    assert pick_best(trials).index == 1
    assert summary_lines(trials, None)[0] == "  grid[0] {'train.seed': 0}: FAILED: run a Crashed"
    with pytest.raises(PipelineError, match="no trial succeeded") as refused:
        pick_best([failed, trials[2]])
    assert "grid[0]: run a Crashed; grid[2]: run c Failed: stage train failed: boom" in str(
        refused.value
    )
    many = [trial(i, None, f"run {i} Crashed") for i in range(40)]  # one line, not forty
    with pytest.raises(PipelineError) as refused:
        pick_best(many)
    assert str(refused.value) == (
        "sweep: no trial succeeded (grid[0]: run 0 Crashed; grid[1]: run 1 Crashed; grid[2]: "
        "run 2 Crashed; grid[3]: run 3 Crashed; grid[4]: run 4 Crashed; and 35 more (each "
        "trial run says why))"
    )


def test_the_registering_runs_outcome_names_the_version_it_registered_or_found() -> None:
    best = Trial(1, {}, val_accuracy=0.99, state_dict_sha256="a" * 64)
    trained = {"val_accuracy": 0.99, "state_dict_sha256": "a" * 64, "version": 4}
    assert registering_outcome(trained, best, "done", awaiting=False) == Registered(4, True, "v4")
    held = registering_outcome({**trained, "registered": False}, best, "done", awaiting=False)
    assert held.outcome == "v4 (nothing registered: v4 already held the same files)"
    other = registering_outcome({**trained, "state_dict_sha256": "b" * 64}, best, None, True)
    assert other.reproduced is False and other.outcome.startswith("v4, awaiting approval")
    # The winner's inputs were registered before: the run trains nothing and names that version.
    found = {"up_to_date": True, "version": 2, "fingerprint": "f" * 64}
    up_to_date = registering_outcome(found, best, "up to date: v2 has the same inputs", False)
    assert up_to_date.version == 2 and up_to_date.reproduced is None
    assert up_to_date.outcome.startswith("v2 (up to date")
    no_row = registering_outcome(None, best, "Completed", False)
    assert no_row == Registered(None, None, "Completed")


def test_a_registering_run_on_other_inputs_than_the_winners_says_so() -> None:
    """Labelled digits arrived (or the code or the deployment's params changed) between the
    trials and the registering run: the version it registered is not the winner's training."""
    best = Trial(1, {}, val_accuracy=0.99, fingerprint="f" * 64, state_dict_sha256="a" * 64)
    same = {"val_accuracy": 0.99, "fingerprint": "f" * 64, "state_dict_sha256": "a" * 64}
    assert registering_outcome({**same, "version": 4}, best, "done", False).same_inputs is True
    other = {**same, "fingerprint": "e" * 64, "state_dict_sha256": "b" * 64, "version": 5}
    registered = registering_outcome(other, best, "done", awaiting=False)
    assert (registered.version, registered.same_inputs) == (5, False)
    assert registered.outcome.startswith(
        "v5, from other inputs than the winning trial's (fingerprint eeeeeeeeeeee, the trial's "
        "ffffffffffff: labelled digits"
    )


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_trial_run_trains_only_and_publishes_its_validation_accuracy(tiny_workdir: Path) -> None:
    from mnist_pipeline.inbox import events as inbox_events

    overrides = {"train.learning_rate": 0.002}
    inbox = tiny_workdir / "data" / "extra"
    inbox.mkdir(parents=True, exist_ok=True)
    inbox_events.write_pending(inbox, 30)  # new digits, counted for the retraining trigger
    params = yaml.safe_load((tiny_workdir / "params.yaml").read_text())
    params.setdefault("registry", {})["signing_key"] = "keys/on-the-deploying-host-only"
    (tiny_workdir / "params.yaml").write_text(yaml.safe_dump(params))  # a trial needs no key
    state = retrain(workdir=str(tiny_workdir), overrides=overrides, trial=True, return_state=True)
    assert state.is_completed() and state.message.startswith("trained, not registered: val")
    assert inbox_events.read_pending(inbox) == 30  # a trial registers nothing: still new
    flow_run_id = state.state_details.flow_run_id
    assert sorted(task_runs(str(flow_run_id))) == ["fetch", "ingest", "inputs", "train"]
    assert not (tiny_workdir / "registry").exists()  # never opened
    with get_client(sync_client=True) as client:
        row = read_trial(client, flow_run_id)
    assert row == json.loads(latest_artifact(TRIAL_KEY)["data"])[0]
    assert set(row) == {
        "val_accuracy",
        "fingerprint",
        "state_dict_sha256",
        "dataset_sha256",
        "extra_sha256",
    }
    assert 0 <= row["val_accuracy"] <= 1
    (run_folder,) = (tiny_workdir / "runs").iterdir()
    history = list(csv.DictReader((run_folder / "reports" / "train_history.csv").open()))
    assert float(history[-1]["val_accuracy"]) == row["val_accuracy"]
    record = json.loads((run_folder / "models" / "model.json").read_text())
    assert record["fingerprint"]["params"]["train"]["learning_rate"] == 0.002
    assert row["state_dict_sha256"] == record["state_dict_sha256"]
    data = record["fingerprint"]
    assert (row["dataset_sha256"], row["extra_sha256"]) == (
        data["dataset_sha256"],
        data["extra_sha256"],
    )
    with pytest.raises(ParamsError, match="'train.epochs' is given twice"):
        retrain.fn(workdir=str(tiny_workdir), epochs=1, overrides={"train.epochs": 2})


def last_val_accuracy(history: bytes) -> float:
    return float(list(csv.DictReader(io.StringIO(history.decode())))[-1]["val_accuracy"])


GRID = [{"train.learning_rate": lr} for lr in (0.0003, 0.002, 0.004)]
# valid params, but 2 steps with half of them rising is a rise of one step: train fails
FAILING = {"train.max_batches_per_epoch": 2, "train.warmup_fraction": 0.5}


@pytest.mark.e2e
def test_sweep_on_two_workers_registers_the_best_by_validation(
    postgres: str,  # noqa: F811
    tmp_path: Path,
    real_mirror: Path,
) -> None:
    """The commit under test (commit first) deployed with prefect.yaml; the sweep flow runs in
    this process and its children on the two workers, which share no folder."""
    if subprocess.run(["git", "daemon", "-h"], capture_output=True).returncode not in (0, 129):
        unavailable("git daemon is not installed")
    head = git("rev-parse", "HEAD", cwd=REPO_ROOT)
    served, deployer = tmp_path / "served", tmp_path / "deployer"
    folders = [tmp_path / name for name in WORKERS]
    for folder in (served, tmp_path / "prefect", *folders):
        folder.mkdir()
    git("init", "--bare", "-q", "-b", "main", str(served / "mnist-pipeline.git"), cwd=tmp_path)
    git("push", "-q", str(served / "mnist-pipeline.git"), f"{head}:refs/heads/main", cwd=REPO_ROOT)
    params_file = smoke_params(tmp_path / "smoke.yaml", real_mirror)
    logs = [tmp_path / f"{name}.log" for name in WORKERS]
    database = {"PREFECT_API_DATABASE_CONNECTION_URL": postgres}
    with (
        git_daemon(served, tmp_path / "git-daemon.log") as git_url,
        prefect_server(tmp_path / "prefect", **database) as server_env,
        temporary_settings(updates={PREFECT_API_URL: server_env["PREFECT_API_URL"]}),
    ):
        env = {k: v for k, v in server_env.items() if k != "PYTHONPATH"}
        repository = f"{git_url}/mnist-pipeline.git"
        git("clone", "-q", repository, str(deployer), cwd=tmp_path)
        prefect = str(BIN / "prefect")
        for args in (
            [prefect, "work-pool", "create", "mnist", "--type", "process"],
            [prefect, "--no-prompt", "deploy", "--all"],
        ):
            done = subprocess.run(
                args,
                env={**env, "MNIST_PIPELINE_REPO": repository},
                cwd=deployer,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stdout + done.stderr
        worker_env = {**env, "MNIST_MIRROR": str(real_mirror), "PREFECT_WORKER_QUERY_SECONDS": "2"}
        command = [prefect, "worker", "start", "--pool", "mnist", "--limit", "1", "--name"]
        workers = [
            start([*command, name], worker_env, log, folder)
            for name, log, folder in zip(WORKERS, logs, folders, strict=True)
        ]
        try:
            grid = [*GRID, FAILING]
            result = sweep(grid=grid, workdir=str(deployer), params_file=params_file, timeout_s=480)
            with get_client(sync_client=True) as client:
                rows = [read_trial(client, t["flow_run"]) for t in result["trials"]]
                children = [t["flow_run"] for t in result["trials"]] + [result["registering_run"]]
                keys = [client.read_flow_run(c).idempotency_key for c in children]
            tasks = {t["flow_run"]: sorted(task_runs(t["flow_run"])) for t in result["trials"]}
        finally:
            for worker in workers:
                stop(worker)
    output = "".join(log.read_text() for log in logs)
    # Every trial trained on a worker, both workers took trials, and no trial touched the test
    # set: trials run fetch, ingest, inputs and train only, and report no test accuracy.
    ran_by = [worker_of(logs, t["flow_run"]) for t in result["trials"]]
    assert set(ran_by) == set(WORKERS), (ran_by, output[-4000:])
    assert all(names == ["fetch", "ingest", "inputs", "train"] for names in tasks.values()), tasks
    # The failing trial is reported with its reason and left out of the pick.
    failed = result["trials"][-1]
    assert rows[-1] is None and failed["val_accuracy"] is None, failed
    assert " Failed: " in failed["error"] and "a warm-up of exactly 1 step" in failed["error"]
    rows = rows[:-1]
    columns = {"val_accuracy", "fingerprint", "state_dict_sha256", "dataset_sha256", "extra_sha256"}
    assert all(set(row) == columns for row in rows)
    accuracies = [row["val_accuracy"] for row in rows]
    best = max(range(len(GRID)), key=lambda i: (accuracies[i], -i))
    assert result["best"] == best and result["config"] == GRID[best], (accuracies, result)
    # The registering run retrained the winner on a worker: the same inputs, the same weights.
    registering = worker_of(logs, result["registering_run"])
    assert registering in WORKERS
    clone = tmp_path / registering / "mnist-pipeline"
    assert git("rev-parse", "HEAD", cwd=clone) == head
    registry = Registry(clone / "registry", "mnist-cnn")
    (card,) = registry.versions()
    assert result["version"] == card["version"] == 1
    assert card["origin"]["flow_run_id"] == result["registering_run"]
    assert card["params"]["train"]["learning_rate"] == GRID[best]["train.learning_rate"]
    assert card["fingerprint"]["sha256"] == rows[best]["fingerprint"]
    assert card["files"]["model.pt"] == rows[best]["state_dict_sha256"]
    assert result["reproduced"] is True and result["same_inputs"] is True
    assert result["same_data"] is True  # every trial on the same MNIST and labelled digits
    assert {row["dataset_sha256"] for row in rows} == {card["data"]["dataset_sha256"]}
    # each child created under a key of its own: a retried create returns the same run
    tags = [f"trial-{i}" for i in range(len(grid))] + ["winner"]
    assert [key.split(":", 2)[2] for key in keys] == tags and len({k[:38] for k in keys}) == 1
    assert keys[0].split(":")[1] == "1"  # the sweep's first attempt: a retried one has its own
    history = registry.fetch(1, "train_history.csv").read_bytes()
    assert last_val_accuracy(history) == max(accuracies) == result["val_accuracy"]
    other = tmp_path / next(w for w in WORKERS if w != registering) / "mnist-pipeline"
    assert (
        not (other / "registry").exists()
        or Registry(other / "registry", "mnist-cnn").versions() == []
    )
    assert not (deployer / "registry").exists() and not (deployer / "runs").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_missing_deployments_are_named_before_any_child_starts(
    tiny_workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registering deployment is the one schedule.deployment_name names (here: none yet)."""
    started: list[object] = []
    monkeypatch.setattr(sweep_module, "start_child", lambda *args: started.append(args))
    nightly = tiny_workdir / "nightly.yaml"
    params = yaml.safe_load((tiny_workdir / "params.yaml").read_text())
    nightly.write_text(yaml.safe_dump({**params, "schedule": {"deployment_name": "nightly"}}))
    with pytest.raises(
        PipelineError, match=r"no deployment mnist-retrain/trial, mnist-retrain/nightly on the"
    ):
        sweep.fn(grid=[{}], workdir=str(tiny_workdir), params_file="nightly.yaml")
    assert started == []


def test_a_registering_runs_time_counts_from_its_start_and_a_failed_read_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The winner queued 50 s for the retraining deployment's one slot has its own 60 s once
    it starts (before: cancelled mid-training at 60 s from its creation, the trials' work
    lost); a read the API fails (its database restarting) is tried again, not the sweep's end."""
    from types import SimpleNamespace
    from uuid import uuid4

    from prefect.states import Completed, Pending, Running

    clock = [0.0]
    monkeypatch.setattr(child_runs.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(child_runs.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    run_id, failures = uuid4(), [2]

    class Client:
        def read_flow_run(self, _id):
            if clock[0] >= 20 and failures[0]:  # two failed reads: retried
                failures[0] -= 1
                raise ConnectionError("the API's database restarts")
            t = clock[0]
            state = Pending() if t < 50 else Running() if t < 105 else Completed()
            return SimpleNamespace(id=run_id, name="winner", state=state)

    cancelled: list[object] = []
    monkeypatch.setattr(child_runs, "cancel", lambda *args: cancelled.append(args))
    monkeypatch.setattr(child_runs, "POLL_S", 5.0)
    (run,) = child_runs.wait_all(Client(), [run_id], 60, keep_queued=True)  # type: ignore[arg-type]
    assert run.state.is_completed() and cancelled == [] and failures == [0]

    class Hung:  # started at 50 s, running for good: cancelled 60 s after its start
        def read_flow_run(self, _id):
            state = Pending() if clock[0] < 50 else Running()
            return SimpleNamespace(id=run_id, name="winner", state=state)

    def bounded(seconds: float) -> None:  # a wait that never ends fails, not hangs
        clock[0] += seconds
        assert clock[0] < 10_000, "still waiting"

    monkeypatch.setattr(child_runs.time, "sleep", bounded)
    clock[0] = 0.0
    with pytest.raises(child_runs.NotFinished, match="cancelled: winner"):
        child_runs.wait_all(Hung(), [run_id], 60, keep_queued=True)  # type: ignore[arg-type]
    assert len(cancelled) == 1 and 110 < clock[0] <= 120
    waited: list[float] = []
    monkeypatch.setattr(child_runs.time, "sleep", waited.append)
    monkeypatch.setattr(child_runs, "POLL_S", 2.0)  # as shipped

    class Down:
        def read_flow_run(self, _id):
            waited.append(-1.0)  # a call
            raise ConnectionError("the API's database restarts")

    with pytest.raises(ConnectionError):  # tried for about half a minute, then the sweep's end
        child_runs.read_run(Down(), run_id)  # type: ignore[arg-type]
    assert waited == [-1.0, 2.0, -1.0, 4.0, -1.0, 8.0, -1.0, 16.0, -1.0]


@flow(name="never-run")
def never_run() -> None:
    """A flow whose runs nothing executes: child runs that stay Pending, or Scheduled."""


def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep run outside a flow run: no deployments to check, a plain logger."""
    monkeypatch.setattr(sweep_module, "check_deployments", lambda *_: None)
    monkeypatch.setattr(sweep_module, "get_run_logger", lambda: logging.getLogger("sweep"))


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_children_still_going_at_the_timeout_are_cancelled(tiny_workdir: Path) -> None:
    """A child no worker ever finishes (here: a run nothing executes) is cancelled, named with
    its state; the registering run, still queued (for the retraining deployment's one slot,
    say), is left to register when it starts, and named as such."""
    with get_client(sync_client=True) as client:
        waiting = client.create_flow_run(never_run)
        with pytest.raises(
            PipelineError, match=rf"not finished after 0 s; cancelled: {waiting.name} \(Pending\)$"
        ):
            child_runs.wait_all(client, [waiting.id], timeout_s=0)
        state = client.read_flow_run(waiting.id).state
        queued = client.create_flow_run(never_run)
        with pytest.raises(
            PipelineError, match=rf"; left queued, to run when it starts: {queued.name} \(Pend"
        ):
            child_runs.wait_registering(client, queued.id, timeout_s=0)
        assert client.read_flow_run(queued.id).state.type.value == "PENDING"  # not cancelled
        late = client.create_flow_run(never_run)  # a trial: cancelled, and a failed trial
        (run,) = child_runs.wait_all(client, [late.id], timeout_s=0, late_cancelled=True)
        trial = sweep_module.trial_of(client, 4, {"train.epochs": 2}, run)
        assert run.state.type.value in ("CANCELLING", "CANCELLED") and not trial.ok
        assert trial.error == f"run {late.name} {run.state.name}: sweep: not finished after 0 s"
        later = datetime.now(UTC) + timedelta(hours=1)  # no worker picked it up
        unstarted = client.create_flow_run(never_run, state=Scheduled(scheduled_time=later))
        (run,) = child_runs.wait_all(client, [unstarted.id], timeout_s=0, late_cancelled=True)
        trial = sweep_module.trial_of(client, 5, {"train.epochs": 3}, run)
        assert trial.error == (  # never started: said so, with the state it waited in
            f"run {unstarted.name} {run.state.name}: sweep: not started after 0 s (still "
            "Scheduled: no free worker, or the deployment's concurrency limit full)"
        )
    assert (
        state.type.value in ("CANCELLING", "CANCELLED")
        and "not finished after 0 s" in state.message
    )


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_child_that_ends_as_it_is_cancelled_keeps_its_final_state() -> None:
    """Read as running, completed a moment later: the cancellation must not replace Completed
    (a forced Cancelling did), nor the failure of one that failed."""

    class ReadEarlier:  # the API as the sweep saw it: the run as read before it ended
        def __init__(self, client: object, run: object) -> None:
            self.client, self.run = client, run

        def read_flow_run(self, _id: object) -> object:
            return self.run

        def set_flow_run_state(self, *args: object, **kwargs: object) -> object:
            return self.client.set_flow_run_state(*args, **kwargs)  # type: ignore[attr-defined]

    with get_client(sync_client=True) as client:
        for final in (Completed(), Failed(message="lost")):
            child = client.create_flow_run(never_run)
            client.set_flow_run_state(child.id, Running(), force=True)
            running = client.read_flow_run(child.id)
            client.set_flow_run_state(child.id, final, force=True)
            child_runs.cancel(ReadEarlier(client, running), [child.id], "sweep: stopped")  # type: ignore[arg-type]
            assert client.read_flow_run(child.id).state.type == final.type
        still = client.create_flow_run(never_run)  # one still running is cancelled, saying why
        client.set_flow_run_state(still.id, Running(), force=True)
        child_runs.cancel(client, [still.id], "sweep: stopped")
        state = client.read_flow_run(still.id).state
        assert state.type.value == "CANCELLING" and state.message == "sweep: stopped"


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("ending", ["a failed start", "an interrupt"])
def test_a_sweep_that_stops_early_cancels_the_trials_it_started(
    tiny_workdir: Path, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """Prefect cancels a parent's children only when the parent is cancelled: a sweep that
    fails or is interrupted (Ctrl-C) cancels its trials itself, and ends as it would have."""
    started: list = []
    offline(monkeypatch)
    with get_client(sync_client=True) as client:

        def start_child(*args) -> object:
            if ending == "a failed start" and started:
                raise RuntimeError("the API refused the second run")
            started.append(client.create_flow_run(never_run).id)
            return started[-1]

        def interrupted(*_: object, **__: object) -> None:  # Ctrl-C while the trials run
            raise KeyboardInterrupt

        monkeypatch.setattr(sweep_module, "start_child", start_child)
        monkeypatch.setattr(sweep_module, "wait_all", interrupted)
        raised = RuntimeError if ending == "a failed start" else KeyboardInterrupt
        with pytest.raises(raised):
            sweep.fn(grid=[{"train.epochs": 2}, {"train.epochs": 3}], workdir=str(tiny_workdir))
        monkeypatch.undo()
        states = [client.read_flow_run(run).state for run in started]
    assert len(started) == (1 if ending == "a failed start" else 2)
    for state in states:
        assert state.type.value in ("CANCELLING", "CANCELLED"), state
        assert state.message.startswith("sweep ") and raised.__name__ in state.message


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_sweep_stopped_while_the_winner_registers_cancels_that_run(
    tiny_workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C after the pick: the registering run is cancelled (a sweep someone stopped
    registers nothing); the finished trials are left as they are."""
    from types import SimpleNamespace

    started: list = []
    offline(monkeypatch)
    with get_client(sync_client=True) as client:

        def start_child(*args) -> object:
            started.append(client.create_flow_run(never_run).id)
            return started[-1]

        def trial_of(_: object, index: int, config: dict, run: object) -> SimpleNamespace:
            return SimpleNamespace(ok=True, index=index, config=config, data=None, error=None)

        def interrupted(*_: object, **__: object) -> None:  # Ctrl-C while the winner trains
            raise KeyboardInterrupt

        monkeypatch.setattr(sweep_module, "start_child", start_child)
        monkeypatch.setattr(sweep_module, "wait_all", lambda c, ids, *_, **__: list(ids))
        monkeypatch.setattr(sweep_module, "trial_of", trial_of)
        monkeypatch.setattr(sweep_module, "pick_best", lambda trials: trials[0])
        monkeypatch.setattr(sweep_module, "summary_lines", lambda *_: [])
        monkeypatch.setattr(sweep_module, "wait_registering", interrupted)
        with pytest.raises(KeyboardInterrupt):
            sweep.fn(grid=[{"train.epochs": 2}, {"train.epochs": 3}], workdir=str(tiny_workdir))
        monkeypatch.undo()
        *trials, winner = [client.read_flow_run(run).state for run in started]
    assert len(trials) == 2 and {t.type.value for t in trials} == {"PENDING"}  # left alone
    assert winner.type.value in ("CANCELLING", "CANCELLED"), winner
    assert winner.message.startswith("sweep ") and "KeyboardInterrupt" in winner.message


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_registering_run_paused_for_approval_is_a_result_not_a_timeout(
    tiny_workdir: Path,
) -> None:
    """With registry.approval: required the winner registers, then pauses for a person: the
    sweep takes that as done (it used to wait out its timeout and cancel the run)."""
    from prefect import flow as prefect_flow
    from prefect import task
    from prefect.states import Paused, Running

    @prefect_flow(name="awaiting-approval")
    def awaiting() -> None: ...

    with get_client(sync_client=True) as client:
        paused = client.create_flow_run(awaiting)
        client.set_flow_run_state(paused.id, Paused(timeout_seconds=3600), force=True)
        (run,) = child_runs.wait_all(client, [paused.id], timeout_s=30, paused_is_done=True)
        assert run.state.is_paused()
        assert client.read_flow_run(paused.id).state.is_paused()  # nothing cancelled
        with pytest.raises(PipelineError, match="cancelled"):  # a trial paused is not done
            child_runs.wait_all(client, [paused.id], timeout_s=0)

        # The retrain flow pauses only its `approval` subflow (a flow run whose parent task
        # run is in the registering run), and itself stays running meanwhile.
        @prefect_flow(name="approval")
        def approval() -> None: ...

        @task(name="approval")
        def stands_for_the_subflow() -> None: ...

        parent = client.create_flow_run(awaiting)
        client.set_flow_run_state(parent.id, Running(), force=True)
        link = client.create_task_run(stands_for_the_subflow, parent.id, dynamic_key="0")
        child = client.create_flow_run(approval, parent_task_run_id=link.id)
        assert not child_runs.awaits_approval(client, client.read_flow_run(parent.id))
        client.set_flow_run_state(child.id, Paused(timeout_seconds=3600), force=True)
        (run,) = child_runs.wait_all(client, [parent.id], timeout_s=30, paused_is_done=True)
        assert run.state.is_running() and child_runs.awaits_approval(client, run)
        assert client.read_flow_run(child.id).state.is_paused()  # nothing cancelled
