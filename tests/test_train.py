"""Train stage on tiny synthetic data: determinism, history, checkpoints, resume after a kill."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from mnist_pipeline.core.errors import DataError, ParamsError, PipelineError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import ModelParams, TrainParams, parse_params
from mnist_pipeline.core.reports import TrainRecord, read_report
from mnist_pipeline.data.dataset import load_mnist, normalise
from mnist_pipeline.model.network import build_model
from mnist_pipeline.model.weights import load_model
from mnist_pipeline.training import loop
from mnist_pipeline.training.train import HISTORY_COLUMNS, TIMING_COLUMNS, history_csv, train
from tests.conftest import REPO_ROOT
from tests.synthetic import make_dataset, write_data_dir

TINY = {"epochs": 3, "batch_size": 32, "val_size": 32, "num_threads": 1}
MODEL = ModelParams()


def params(**changes: object) -> TrainParams:
    return TrainParams.model_validate({**TINY, **changes})


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def project(root: Path) -> Layout:
    """A layout under `root` holding the tiny dataset."""
    layout = Layout(root)
    write_data_dir(layout.data_dir, make_dataset())
    return layout


def run(tmp_path: Path, name: str, p: TrainParams) -> dict[str, torch.Tensor]:
    result = train(MODEL, p, project(tmp_path / name))
    return weights(result.state_dict)


# --- pure pieces ----------------------------------------------------------------------------


def test_split_is_a_seeded_partition() -> None:
    train_idx, val_idx = loop.split_indices(100, 20, torch.Generator().manual_seed(3))
    assert len(train_idx) == 80 and len(val_idx) == 20
    assert sorted(torch.cat([train_idx, val_idx]).tolist()) == list(range(100))
    again, _ = loop.split_indices(100, 20, torch.Generator().manual_seed(3))
    assert torch.equal(train_idx, again)


def test_batches_cover_every_index_once_and_respect_the_cap() -> None:
    indices = torch.arange(10, 20)
    batches = list(loop.batch_indices(indices, 4, torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10, 20))
    capped = list(loop.batch_indices(indices, 4, torch.Generator().manual_seed(0), 2))
    assert len(capped) == 2
    assert loop.steps_per_epoch(10, 4, None) == 3 and loop.steps_per_epoch(10, 4, 2) == 2


def test_label_smoothing_trains_against_softened_targets() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 10)
    images, labels = torch.randn(8, 4), torch.arange(8)
    with torch.no_grad():
        logits = model(images)
    losses = []
    for smoothing in (0.0, 0.2):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the loss of these weights
        scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
        one_batch = (images, labels, iter([torch.arange(8)]))
        stats = loop.train_epoch(model, optimizer, scheduler, *one_batch, label_smoothing=smoothing)
        expected = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=smoothing)
        assert stats.loss == pytest.approx(float(expected))
        losses.append(stats.loss)
    assert losses[0] != pytest.approx(losses[1])
    with pytest.raises(ValueError, match="label_smoothing"):
        params(label_smoothing=1.0)


def rates(optimizer: torch.optim.Optimizer, scheduler, steps: int) -> list[float]:
    """The learning rate of each of `steps` optimiser steps, the scheduler stepped after each."""
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_onecycle_runs_from_learning_rate_to_peak() -> None:
    p = params(epochs=2, learning_rate=0.001, max_learning_rate=0.004)
    model = torch.nn.Linear(2, 2)
    optimizer = loop.make_optimizer(model, p)
    scheduler = loop.make_scheduler(optimizer, p, steps=10)
    lrs = rates(optimizer, scheduler, 20)
    assert lrs[0] == pytest.approx(0.001)
    assert max(lrs) == pytest.approx(0.004, rel=0.05)
    assert lrs[-1] < 0.0001


def test_constant_schedule_keeps_the_learning_rate() -> None:
    p = params(epochs=2, lr_schedule="constant", learning_rate=0.002)
    optimizer = loop.make_optimizer(torch.nn.Linear(2, 2), p)
    scheduler = loop.make_scheduler(optimizer, p, steps=10)
    lrs = rates(optimizer, scheduler, 20)
    assert lrs == [0.002] * 20


def test_onecycle_must_rise() -> None:
    with pytest.raises(ParamsError, match=r"train: .*max_learning_rate \(0.0005\) must be >="):
        parse_params({"train": {"learning_rate": 0.001, "max_learning_rate": 0.0005}})
    constant = {"lr_schedule": "constant", "learning_rate": 0.001, "max_learning_rate": 0.0005}
    assert parse_params({"train": constant}).train.lr_schedule == "constant"


# --- the stage ------------------------------------------------------------------------------


def test_same_params_give_bit_identical_weights(tmp_path: Path) -> None:
    first = run(tmp_path, "a", params())
    second = run(tmp_path, "b", params())
    other_seed = run(tmp_path, "c", params(seed=2))
    assert same_weights(first, second)
    assert not same_weights(first, other_seed)


def test_auto_precision_is_bf16_only_where_native(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert [loop.resolve_precision(p, cpu) for p in ("fp32", "bf16")] == ["fp32", "bf16"]
    monkeypatch.setattr(loop, "native_bf16", lambda device: True)
    assert loop.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(loop, "native_bf16", lambda device: False)
    assert loop.resolve_precision("auto", cpu) == "fp32"


def test_bf16_mixed_precision_is_deterministic_and_keeps_fp32_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bf16 = run(tmp_path, "a", params(precision="bf16"))
    assert "in bf16 (train.precision: bf16)" in capsys.readouterr().err
    again = run(tmp_path, "b", params(precision="bf16"))
    fp32 = run(tmp_path, "c", params(precision="fp32"))
    recorded = [  # what a version's model.json says it was trained in
        read_report(TrainRecord, project(tmp_path / name).train_record, "train").precision
        for name in ("a", "c")
    ]
    assert recorded == ["bf16", "fp32"]
    assert same_weights(bf16, again)
    assert not same_weights(bf16, fp32)  # autocast really ran in bfloat16
    assert {t.dtype for t in bf16.values()} == {torch.float32}


def test_outputs_history_and_result(tmp_path: Path, tiny_data_dir: Path) -> None:
    layout = Layout(tmp_path)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    result = train(MODEL, params(), layout)
    assert (result.epochs_run, result.resumed_from) == (3, 0)
    assert result.state_dict == layout.state_dict
    assert set(weights(layout.state_dict)) == set(build_model("classic").state_dict())
    assert not layout.checkpoint.exists()  # deleted once the final weights are written
    with open(layout.train_history, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == HISTORY_COLUMNS
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert result.train_loss == float(rows[-1]["train_loss"])
    assert result.val_accuracy == float(rows[-1]["val_accuracy"]) > 0.5  # learnable data
    assert all(float(r["lr"]) > 0 for r in rows)
    # Wall-clock time is kept apart: the history DVC tracks is a function of the inputs only.
    assert not {"seconds", "time", "timestamp"} & set(rows[0])
    with open(layout.train_timings, newline="") as handle:
        timings = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in timings] == [1, 2, 3]
    assert all(float(r["seconds"]) > 0 for r in timings)
    # The caller's torch settings come back.
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_the_history_has_no_time_column_and_the_timings_do() -> None:
    """Two runs that differ only in wall-clock time write the same history (DVC tracks it)."""
    row = {"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.8, "val_loss": 0.4}
    fast, slow = {**row, "lr": 1e-3, "seconds": 0.25}, {**row, "lr": 1e-3, "seconds": 9.5}
    assert history_csv([fast]) == history_csv([slow])
    assert "seconds" not in HISTORY_COLUMNS and "seconds" not in history_csv([slow])
    assert history_csv([slow], TIMING_COLUMNS) == "epoch,seconds\n1,9.5\n"
    assert history_csv([row], TIMING_COLUMNS) == "epoch,seconds\n1,\n"  # an old checkpoint's


def test_no_validation_split(tmp_path: Path, tiny_data_dir: Path) -> None:
    result = train(MODEL, params(val_size=0, epochs=1, temperature_scaling=False), Layout(tmp_path))
    assert result.val_accuracy is None
    row = (tmp_path / "reports" / "train_history.csv").read_text().splitlines()[1].split(",")
    assert row[3:5] == ["", ""]


@pytest.mark.parametrize("schedule", ["onecycle", "constant"])
def test_max_batches_per_epoch_is_a_smoke_knob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, schedule: str
) -> None:
    real, taken = loop.batch_indices, []

    def counted(*args, **kwargs):
        batches = list(real(*args, **kwargs))
        taken.append(len(batches))
        return iter(batches)

    monkeypatch.setattr(loop, "batch_indices", counted)
    capped = run(tmp_path, "capped", params(max_batches_per_epoch=1, lr_schedule=schedule))
    assert taken == [1] * TINY["epochs"]
    taken.clear()
    full = run(tmp_path, "full", params(lr_schedule=schedule))
    assert len(taken) == TINY["epochs"] and min(taken) > 1
    assert not same_weights(capped, full)


class Interrupt(Exception):
    pass


def interrupt_in_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Make training die (mid-epoch, after some steps) in the given epoch."""
    real = loop.train_epoch
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == epoch:
            batches = args[5]
            next(batches)
            raise Interrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_epoch", dying)


def interrupted(
    monkeypatch: pytest.MonkeyPatch, epoch: int, chosen: TrainParams, layout: Layout
) -> None:
    """Train `chosen` in `layout` until it dies in `epoch` (its checkpoint left behind)."""
    with monkeypatch.context() as patch:
        interrupt_in_epoch(patch, epoch)
        with pytest.raises(Interrupt):
            train(MODEL, chosen, layout)


@pytest.mark.parametrize("augment", [False, True])
def test_resume_after_interruption_matches_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, augment: bool
) -> None:
    chosen = params(augment={"enabled": augment})
    layout = project(tmp_path / "resumed")
    interrupted(monkeypatch, 3, chosen, layout)
    assert layout.checkpoint.is_file() and not layout.state_dict.exists()
    assert not layout.train_history.exists()  # written with the weights, at the end
    result = train(MODEL, chosen, layout)
    assert (result.resumed_from, result.epochs_run) == (2, 1)
    assert "resuming from" in capsys.readouterr().err
    assert same_weights(weights(layout.state_dict), run(tmp_path, "clean", chosen))
    if augment:  # the warps are part of the run: without them, other weights
        plain = params(augment={"enabled": False})
        assert not same_weights(weights(layout.state_dict), run(tmp_path, "plain", plain))
    assert len(layout.train_history.read_text().splitlines()) == 1 + 3


def test_checkpoint_with_other_params_is_not_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    layout = project(tmp_path / "changed")
    interrupted(monkeypatch, 2, params(), layout)
    assert layout.checkpoint.is_file()
    new = params(learning_rate=0.002)
    result = train(MODEL, new, layout)
    assert result.resumed_from == 0 and result.epochs_run == 3
    assert "different train.learning_rate; starting fresh" in capsys.readouterr().err
    assert same_weights(weights(layout.state_dict), run(tmp_path, "new", new))


def test_checkpoint_of_other_training_code_is_not_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Interrupted, then the code changed (a pull, a fix): the state of the old code is not
    carried into weights whose record names the new code."""
    from mnist_pipeline.training import fingerprint

    layout = project(tmp_path / "recoded")
    interrupted(monkeypatch, 2, params(), layout)
    monkeypatch.setattr(fingerprint, "code_sha256", lambda *args: "0" * 64)
    result = train(MODEL, params(), layout)
    assert result.resumed_from == 0 and result.epochs_run == 3
    assert "different training code; starting fresh" in capsys.readouterr().err


def test_checkpoint_of_another_pytorch_release_is_not_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Interrupted, then PyTorch upgraded: its kernels may give other weights, so the old
    release's state is not carried on."""
    layout = project(tmp_path / "upgraded")
    interrupted(monkeypatch, 2, params(), layout)
    monkeypatch.setattr(torch, "__version__", "99.0.0")
    result = train(MODEL, params(), layout)
    assert result.resumed_from == 0 and result.epochs_run == 3
    assert "different torch (" in capsys.readouterr().err


def test_failed_run_leaves_previous_outputs(
    tmp_path: Path, tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = Layout(tmp_path)
    train(MODEL, params(epochs=1), layout)
    before = layout.state_dict.read_bytes(), layout.train_history.read_bytes()
    interrupted(monkeypatch, 2, params(seed=5), layout)
    assert (layout.state_dict.read_bytes(), layout.train_history.read_bytes()) == before


@pytest.mark.parametrize("val_size", [32, 0])  # 0: no validation loss, the training one told
def test_a_run_whose_loss_stops_being_a_number_fails_and_writes_nothing(
    tmp_path: Path, tiny_data_dir: Path, val_size: int
) -> None:
    """Weights that blow up to NaN (here after epoch 1, through the epoch hook) end the run in
    the epoch they poison: no model that gates or calibrates on NaN, the last good outputs kept."""
    from mnist_pipeline.core.errors import TrainingError

    layout = Layout(tmp_path)
    train(MODEL, params(epochs=1), layout)
    before = layout.state_dict.read_bytes(), layout.train_history.read_bytes()

    def blow_up(epoch: int, net: torch.nn.Module, _seconds: float) -> None:
        if epoch == 1:
            with torch.no_grad():
                next(net.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingError, match=r"^training diverged in epoch 2 \(train loss nan"):
        chosen = params(epochs=3, seed=5, val_size=val_size, temperature_scaling=val_size > 0)
        train(MODEL, chosen, layout, blow_up)
    assert (layout.state_dict.read_bytes(), layout.train_history.read_bytes()) == before
    saved = torch.load(layout.checkpoint, map_location="cpu", weights_only=True)
    assert saved["epoch"] == 1  # the diverged epoch was not checkpointed


def test_a_second_training_of_one_folder_is_refused_and_touches_nothing(
    tmp_path: Path, tiny_data_dir: Path
) -> None:
    """Another process training into models/ (its lock held): this one would resume or delete
    that one's checkpoint and interleave its outputs with them."""
    layout = Layout(tmp_path)
    layout.model_dir.mkdir(parents=True)
    layout.checkpoint.write_bytes(b"the other training's epochs")
    hold = (
        "import sys; from filelock import FileLock\n"
        f"lock = FileLock({str(layout.model_dir / '.train.lock')!r}); lock.acquire()\n"
        "print('held', flush=True); sys.stdin.read()\n"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "held"
        with pytest.raises(PipelineError, match=r"another training is writing .*models"):
            train(MODEL, params(), layout)
        assert layout.checkpoint.read_bytes() == b"the other training's epochs"
        assert not layout.state_dict.exists()
    finally:
        other.communicate(timeout=30)
    layout.checkpoint.unlink()
    assert train(MODEL, params(), layout).epochs_run == 3  # once it has ended


def test_unreadable_checkpoint_starts_fresh(tmp_path: Path, tiny_data_dir: Path, capsys) -> None:
    layout = Layout(tmp_path)
    layout.checkpoint.parent.mkdir(parents=True)
    layout.checkpoint.write_bytes(b"not a checkpoint")
    assert train(MODEL, params(epochs=1), layout).resumed_from == 0
    said = capsys.readouterr().err
    assert "ignoring unreadable checkpoint" in said
    assert "weights_only" not in said  # not the loader's advice to run what the file holds


@pytest.mark.parametrize(
    "foreign",
    [
        {"format": 1, "identity": None},
        {"format": 1, "identity": {"params": ["epochs"]}},
        {"format": 1, "identity": {"params": {1: 2}}},
        [1],
    ],
    ids=["identity-not-a-mapping", "params-not-a-mapping", "params-not-by-name", "a-list"],
)
def test_a_checkpoint_of_another_shape_starts_fresh(
    tmp_path: Path, tiny_data_dir: Path, capsys, foreign: object
) -> None:
    """A file that only looks like this format (another tool's): ignored, never a traceback."""
    layout = Layout(tmp_path)
    layout.checkpoint.parent.mkdir(parents=True)
    torch.save(foreign, layout.checkpoint)
    assert train(MODEL, params(epochs=1), layout).resumed_from == 0
    assert "of an unknown format; starting fresh" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["no optimizer", "a weight of another shape"])
def test_a_checkpoint_whose_contents_do_not_load_starts_fresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, damage: str
) -> None:
    """One of this run (its identity matches) but damaged inside: the run is the fresh one."""
    layout = project(tmp_path / "damaged")
    interrupted(monkeypatch, 2, params(), layout)
    saved = torch.load(layout.checkpoint, weights_only=True)
    if damage == "no optimizer":
        del saved["optimizer"]
    else:
        saved["model"]["fc2.weight"] = saved["model"]["fc2.weight"][:5]
    torch.save(saved, layout.checkpoint)
    capsys.readouterr()
    result = train(MODEL, params(), layout)
    assert (result.resumed_from, result.epochs_run) == (0, 3)
    assert "starting fresh" in capsys.readouterr().err
    assert same_weights(weights(layout.state_dict), run(tmp_path, "clean", params()))


def test_bad_inputs_are_clear_errors(tmp_path: Path, tiny_data_dir: Path) -> None:
    layout = Layout(tmp_path)
    with pytest.raises(ParamsError, match="train.val_size=256 leaves no training images"):
        train(MODEL, params(val_size=256), layout)
    with pytest.raises(DataError, match="run `mnist-pipeline fetch` first"):
        train(MODEL, params(), Layout(tmp_path / "nowhere"))
    assert not layout.state_dict.exists()


def test_cuda_without_a_gpu_is_a_clear_error(
    tmp_path: Path, tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a GPU machine
    with pytest.raises(ParamsError, match="train.device is 'cuda' but no CUDA device"):
        train(MODEL, params(device="cuda"), Layout(tmp_path))
    assert not Layout(tmp_path).state_dict.exists()


# --- a real process, killed ---------------------------------------------------------------

KILL_TRAIN = {"epochs": 4, "batch_size": 16, "val_size": 64, "num_threads": 1}


def cli(root: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mnist_pipeline",
        "--params",
        str(root / "params.yaml"),
        "--root",
        str(root),
        "train",
    ]


@pytest.mark.slow
def test_killed_training_process_resumes_to_the_same_weights(tmp_path: Path) -> None:
    root = tmp_path / "project"
    write_data_dir(root / "data" / "mnist", make_dataset(n_train=3072, n_test=64))
    (root / "params.yaml").write_text(yaml.safe_dump({"train": KILL_TRAIN}))
    layout = Layout(root)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    process = subprocess.Popen(cli(root), env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not layout.checkpoint.exists() and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert layout.checkpoint.is_file() and not layout.state_dict.exists()

    finished = subprocess.run(cli(root), env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert "resuming from" in finished.stderr
    assert "resumed after epoch" in finished.stderr
    assert not layout.checkpoint.exists()

    clean = Layout(tmp_path / "clean")
    write_data_dir(clean.data_dir, make_dataset(n_train=3072, n_test=64))
    reference = train(MODEL, TrainParams.model_validate(KILL_TRAIN), clean)
    assert same_weights(weights(layout.state_dict), weights(reference.state_dict))
    assert len(layout.train_history.read_text().splitlines()) == 1 + KILL_TRAIN["epochs"]


def test_without_validation_the_weights_the_last_step_left_are_checked() -> None:
    """The epoch's training loss was taken before each step: the last step's NaN shows only
    in the weights, which a validation pass would have scored."""
    from mnist_pipeline.core.errors import TrainingError
    from mnist_pipeline.evaluation.metrics import EpochStats
    from mnist_pipeline.model.network import build_model
    from mnist_pipeline.training.loop import check_finite

    net = build_model("classic")
    trained, none = EpochStats(0.3, 0.9, 64), EpochStats(float("nan"), float("nan"), 0)
    check_finite(1, trained, none, net)  # finite weights, no validation: fine
    with torch.no_grad():
        next(net.parameters())[0].fill_(float("inf"))
    with pytest.raises(TrainingError, match="diverged in epoch 1.*lower train.max_learning_rate"):
        check_finite(1, trained, none, net)
    with pytest.raises(TrainingError, match=r"lower train.learning_rate and train again$"):
        check_finite(1, trained, none, net, "constant")  # the only rate it trains at
    check_finite(1, trained, EpochStats(0.2, 0.95, 32), net)  # its validation loss is the check


def test_history_validation_scores_and_rates_are_recomputable(tmp_path: Path) -> None:
    """The history's validation scores are model.pt's on the validation split, and its lr
    column the rate each epoch started at."""
    chosen = params(temperature_scaling=False)  # model.pt = the weights the last row scored
    layout = project(tmp_path / "p")
    train(MODEL, chosen, layout)
    with open(layout.train_history, newline="") as handle:
        rows = list(csv.DictReader(handle))
    data = load_mnist(layout.data_dir)
    n = len(data.train_labels)
    _, val_idx = loop.split_indices(n, chosen.val_size, torch.Generator().manual_seed(chosen.seed))
    net = load_model(MODEL.arch, layout.state_dict)
    with torch.no_grad():
        logits = net(normalise(data.train_images[val_idx]))
    labels = data.train_labels[val_idx].long()
    accuracy = (logits.argmax(1) == labels).double().mean().item()
    assert float(rows[-1]["val_accuracy"]) == pytest.approx(accuracy, abs=1e-6)
    assert float(rows[-1]["val_loss"]) == pytest.approx(
        F.cross_entropy(logits, labels).item(), abs=1e-5
    )
    # the lr column is the rate each epoch starts at
    steps = loop.steps_per_epoch(n - chosen.val_size, chosen.batch_size, None)
    optimizer = loop.make_optimizer(torch.nn.Linear(2, 2), chosen)
    lrs = rates(optimizer, loop.make_scheduler(optimizer, chosen, steps), chosen.epochs * steps)
    expected = [lrs[e * steps] for e in range(chosen.epochs)]
    assert [float(r["lr"]) for r in rows] == pytest.approx(expected)
    assert float(rows[0]["lr"]) == pytest.approx(chosen.learning_rate)


def test_train_epoch_accuracy_counts_right_answers() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 10)
    images, labels = torch.randn(64, 4), torch.randint(0, 10, (64,))
    with torch.no_grad():
        expected = (model(images).argmax(1) == labels).double().mean().item()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    stats = loop.train_epoch(model, optimizer, scheduler, images, labels, iter([torch.arange(64)]))
    assert stats.accuracy == pytest.approx(expected)
    assert expected != pytest.approx(1 - expected)


def test_checkpoint_of_another_resolved_precision_is_not_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """`precision: auto` resolved to bf16 (a host with native bf16) is not resumed where it
    resolves to fp32: the params are the same, only the run's resolved precision differs."""
    layout = project(tmp_path / "p")
    monkeypatch.setattr(loop, "native_bf16", lambda device: True)
    interrupted(monkeypatch, 2, params(precision="auto"), layout)
    assert layout.checkpoint.is_file()
    monkeypatch.setattr(loop, "native_bf16", lambda device: False)
    capsys.readouterr()
    result = train(MODEL, params(precision="auto"), layout)
    assert (result.resumed_from, result.epochs_run) == (0, 3)
    assert "different precision (bf16 -> fp32); starting fresh" in capsys.readouterr().err
