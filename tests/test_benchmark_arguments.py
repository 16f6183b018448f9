"""The benchmarks' command lines: a bad value is one usage error before anything runs."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import runpy
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from benchmarks import choose_defaults, time_to_accuracy
from benchmarks.arguments import (
    count_list,
    digit,
    existing_file,
    existing_folder,
    int_list,
    mirrors,
    name_list,
    non_negative_float,
    positive_float,
    positive_int,
    positive_int_list,
)
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import Params
from mnist_pipeline.pipeline import stages
from tests.conftest import REPO_ROOT


def test_the_value_types_take_good_values_and_name_bad_ones() -> None:
    assert (positive_int("3"), positive_float("0.5"), int_list("1,2,3")) == (3, 0.5, [1, 2, 3])
    assert name_list("a,b", ("a", "b", "c")) == ["a", "b"]
    assert (count_list("0,50"), positive_int_list("1,4"), non_negative_float("0")) == (
        [0, 50],
        [1, 4],
        0.0,
    )
    assert (digit("7"), existing_folder(str(REPO_ROOT)), existing_file(__file__)) == (
        7,
        REPO_ROOT,
        Path(__file__),
    )
    for parse, text, problem in [
        (positive_int, "0", "must be 1 or more, got 0"),
        (positive_int, "-3", "must be 1 or more, got -3"),
        (positive_int, "2.5", "not a whole number: '2.5'"),
        (positive_float, "0", "must be a finite number > 0"),
        (positive_float, "inf", "must be a finite number > 0"),
        (positive_float, "nan", "must be a finite number > 0"),
        (positive_float, "x", "not a number: 'x'"),
        (int_list, "abc", "not comma-separated whole numbers: 'abc'"),
        (int_list, "", "not comma-separated whole numbers"),
        (int_list, "1,1", "a number given twice"),
        (lambda t: name_list(t, ("a", "b")), "a,z", "unknown 'z': choose from a, b"),
        (lambda t: name_list(t, ("a", "b")), "a,a", "a name given twice"),
        (count_list, "0,-1", "a count below 0"),
        (positive_int_list, "1,0", "each must be 1 or more"),
        (non_negative_float, "-5", "must be a finite number >= 0, got -5"),
        (non_negative_float, "nan", "must be a finite number >= 0"),
        (digit, "10", "not a digit from 0 to 9: '10'"),
        (existing_file, "/nonexistent.onnx", "no file at /nonexistent.onnx"),
        (existing_folder, "/nonexistent", "no folder at /nonexistent"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=problem):
            parse(text)


def test_mirrors_are_taken_as_mnist_mirror_takes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file:// or https:// mirror used to be read as a folder under the current one."""
    monkeypatch.chdir(tmp_path)
    given = "shared/mnist, file:///srv/mnist,https://example.org/mnist/"
    assert mirrors(given) == [
        str(tmp_path / "shared" / "mnist"),
        "file:///srv/mnist",
        "https://example.org/mnist/",
    ]
    with pytest.raises(argparse.ArgumentTypeError, match="names no mirror"):
        mirrors(" , ")


def test_choose_defaults_checks_every_config_before_fetching(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad second config used to fail only after the first had trained for hours."""
    monkeypatch.setattr(tempfile, "mkdtemp", lambda **_: pytest.fail("began work"))
    for configs, problem in [
        (['{"epochs": 1}', "notjson"], "--config 'notjson' is not JSON"),
        (['{"epochs": 1}', "[1]"], "expected a JSON object of overrides"),
        (['{"epochs": 0}'], "train.epochs: Input should be greater than or equal to 1"),
        (['{"model": {"arch": "huge"}}'], "model.arch"),
        (['{"epochs": 1}', "--seeds=1,-1"], "train.seed: Input should be greater than or equal"),
    ]:
        argv = ["choose_defaults"]
        argv += [arg if arg.startswith("--") else f"--config={arg}" for arg in configs]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exited:
            choose_defaults.main()
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert problem in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--max-epochs", "0"], "argument --max-epochs: must be 1 or more, got 0"),
        (["--recipes", "ours,ours"], "argument --recipes: a name given twice"),
        (["--seeds", "1,x"], "argument --seeds: not comma-separated whole numbers"),
        (["--seeds", "1,-1"], "train.seed: Input should be greater than or equal to 0"),
        (["--threads", "300"], "train.num_threads: Input should be less than or equal to 256"),
        (["--params", "/nonexistent/p.yaml"], "error: params file not found: /nonexistent/p.yaml"),
        (["--data-dir", "/nonexistent"], "error: missing dataset file /nonexistent/"),  # exit 1
    ],
)
def test_time_to_accuracy_refuses_bad_arguments_in_one_line(
    args: list[str],
    problem: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "argv", ["time_to_accuracy", *args])
    with pytest.raises(SystemExit) as exited:
        time_to_accuracy.main()
    assert exited.value.code == (1 if "dataset" in problem else 2)
    err = capsys.readouterr().err
    assert problem in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("script", "args", "problem"),
    [
        ("bench_inference", ["--repeats", "0"], "argument --repeats: must be 1 or more, got 0"),
        ("bench_inference", ["--arch", "bogus"], "argument --arch: invalid choice: 'bogus'"),
        ("bench_inference", ["--state-dict", "models/modle.pt"], "no file at models/modle.pt"),
        ("bench_evaluate", ["--repeats", "0"], "argument --repeats: must be 1 or more"),
        ("bench_flow", ["--runs", "0"], "argument --runs: must be 1 or more, got 0"),
        ("bench_retrain", ["--runs", "0"], "argument --runs: must be 1 or more, got 0"),
        ("extra_data_experiment", ["--weights", "x"], "argument --weights: not comma-separated"),
        ("poisoning", ["--counts", "a,b"], "argument --counts: not comma-separated whole"),
        ("poisoning", ["--digit", "10"], "argument --digit: not a digit from 0 to 9"),
        ("registry_ops", ["--versions", "0"], "argument --versions: must be 1 or more, got 0"),
        ("registry_ops", ["--latency-ms", "-5"], "argument --latency-ms: must be a finite nu"),
        ("drift_psi", ["--onnx", "/nonexistent.onnx"], "argument --onnx: no file at /nonexi"),
        ("bench_train", ["--data-dir", "/nonexistent"], "argument --data-dir: no folder at /n"),
        ("multi_host_noop", ["--runs", "3"], "unrecognized arguments: --runs 3"),
    ],
)
def test_benchmarks_refuse_bad_arguments_in_one_line(
    script: str,
    args: list[str],
    problem: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each of these was a traceback after a warm-up run, or ran on something else (a typo in
    --state-dict ran on random weights; --latency-ms -5 was accepted)."""
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(sys, "argv", [script, *args])
    with pytest.raises(SystemExit) as exited:
        importlib.import_module(f"benchmarks.{script}").main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert problem in err and "Traceback" not in err, err


def test_a_benchmark_stopped_by_sigterm_removes_its_scratch_folder(tmp_path: Path) -> None:
    """SIGTERM's default action ended the process at once: `timeout` left 100 MB behind."""
    code = (
        "import sys, time\n"
        "from benchmarks.scratch import scratch_folder\n"
        "with scratch_folder('bench-test-') as folder:\n"
        "    (folder / 'run').write_bytes(b'x' * 1000)\n"
        "    print(folder, flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    ) as proc:
        assert proc.stdout is not None
        folder = Path(proc.stdout.readline().strip())
        assert (folder / "run").is_file()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert not folder.exists() and list(tmp_path.iterdir()) == []


def test_choose_defaults_scores_a_run_below_the_gate(tmp_path: Path, tiny_params: Params) -> None:
    """A candidate is measured, not gated: one under evaluate.min_accuracy ended the whole
    comparison in a GateError traceback before its summary."""
    strict = tiny_params.model_copy(
        update={
            "evaluate": tiny_params.evaluate.model_copy(
                update={"min_accuracy": 0.9999, "robustness_per_transform": 0}
            )
        }
    )
    layout = Layout(tmp_path)
    for name in ("fetch", "train"):
        stages.run(name, strict, layout)
    scored = choose_defaults.score_on_test(strict, layout)
    assert 0.0 < scored["test"] < 0.9999


def quoted_benchmark_commands() -> set[tuple[str, ...]]:
    """Each benchmark the README, docs/, the Makefile and the benchmarks' own docstrings tell a
    reader to run, as the command line names it: ("-m", "benchmarks.x") or ("benchmarks/x.py",)."""
    texts = [REPO_ROOT / "README.md", REPO_ROOT / "Makefile", *(REPO_ROOT / "docs").glob("*.md")]
    texts += (REPO_ROOT / "benchmarks").glob("*.py")
    found = set()
    for text in texts:
        for module, script in re.findall(
            r"python (?:-m (benchmarks\.\w+)|(benchmarks/\w+\.py))", text.read_text()
        ):
            found.add(("-m", module) if module else (script,))
    return found


def test_every_benchmark_the_docs_quote_starts_as_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python benchmarks/bench_train.py`, as `make bench` ran it, failed to import its own
    package: a script's folder, not the repository, is on sys.path. Each command's `--help`:
    a script as its own process, a module (`-m`, the repository on sys.path as here) in this one."""
    commands = quoted_benchmark_commands()
    assert ("-m", "benchmarks.bench_train") in commands and len(commands) >= 15
    monkeypatch.chdir(REPO_ROOT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for command in sorted(commands):
        if command[0] != "-m":
            done = subprocess.run(
                [sys.executable, *command, "--help"], env=env, capture_output=True, text=True
            )
            assert done.returncode == 0 and "usage:" in done.stdout, (command, done.stderr)
            continue
        monkeypatch.setattr(sys, "argv", [command[1], "--help"])
        monkeypatch.delitem(sys.modules, command[1], raising=False)  # run afresh, as -m does
        with pytest.raises(SystemExit) as exited:
            runpy.run_module(command[1], run_name="__main__", alter_sys=True)
        assert exited.value.code in (0, None), command
        assert "usage:" in capsys.readouterr().out, command
