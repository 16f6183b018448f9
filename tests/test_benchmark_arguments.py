"""The benchmarks' command lines: a bad value is one usage error before anything runs."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pytest

from benchmarks import choose_defaults, time_to_accuracy
from benchmarks.arguments import int_list, mirrors, name_list, positive_float, positive_int


def test_the_value_types_take_good_values_and_name_bad_ones() -> None:
    assert (positive_int("3"), positive_float("0.5"), int_list("1,2,3")) == (3, 0.5, [1, 2, 3])
    assert name_list("a,b", ("a", "b", "c")) == ["a", "b"]
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
