"""The CLI's promises about bad input (docs/reliability.md): bad params are one line naming the
key and file, exit 2, nothing written; `train` finds a read-only or full output folder before
its first epoch, one line naming the folder, exit 74."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from mnist_pipeline.cli.app import main
from mnist_pipeline.core import atomic
from mnist_pipeline.core.errors import EXIT_IO, ParamsError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.training import loop
from tests.conftest import REPO_ROOT

TINY = "train:\n  epochs: 1\n  max_batches_per_epoch: 1\n  val_size: 32\n  num_threads: 1\n"


class ReachedEpoch(Exception):
    """Raised in place of the first training epoch: training got that far."""


def cli(root: Path, *args: str) -> int:
    """The console script in this process, run in `root`; its exit code."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["mnist-pipeline", "--root", str(root), *args])
        try:
            main()
        except SystemExit as done:
            return int(done.code or 0)
    return 0


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        pytest.param('train:\n  epochs: "3"\n', "train.epochs: Input should be", id="type"),
        pytest.param("train:\n  epoch: 3\n", "train.epoch: unknown key", id="unknown-key"),
        pytest.param("trian:\n  epochs: 3\n", "trian: unknown key", id="unknown-section"),
        pytest.param(
            "train:\n  learning_rate: -1\n", "train.learning_rate: Input should be", id="range"
        ),
        pytest.param("train:\n  arch: wide\n", "train.arch: moved to model.arch", id="moved"),
        pytest.param("train: [unclosed\n", "not valid YAML (line 2", id="yaml"),
        pytest.param(
            "train:\n  epochs: 2\n  epochs: 3\n", "duplicate key 'epochs'", id="duplicate"
        ),
    ],
)
def test_bad_params_are_one_line_exit_2_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, named: str
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(text)
    assert cli(tmp_path, "train") == ParamsError.exit_code == 2
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {params}: ") and named in err
    assert out == "" and files_under(tmp_path) == ["params.yaml"]


def test_a_params_file_named_that_is_not_there_is_refused_by_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--params` given but missing: refused before any command runs, also by those that read
    no params (they would run as if it were right)."""
    for command in (["data", "list"], ["data", "init"], ["models", "keygen", "k"]):
        assert cli(tmp_path, "--params", str(tmp_path / "nope.yaml"), *command) == 2
        assert capsys.readouterr().err == f"error: params file not found: {tmp_path}/nope.yaml\n"
    assert files_under(tmp_path) == []
    assert cli(tmp_path, "--params", str(tmp_path / "nope.yaml"), "data", "list", "--help") == 0
    assert "Usage:" in capsys.readouterr().out  # help needs no params


@pytest.mark.parametrize(
    "args",
    [
        ["--params", "", "data", "list"],
        ["data", "add", "--label", "7", ""],
        ["data", "pending", "--save", ""],
        ["predict", ""],
        ["serve-report", "--from", ""],
        ["data", "pending", "--save", "  "],
    ],
    ids=["params", "add", "save", "predict", "from", "blank"],
)
def test_an_empty_path_is_a_usage_error_not_the_current_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], monkeypatch
) -> None:
    """`Path("")` is ".": `--save ""` wrote its copies into the current folder, and `--params
    ""` or an empty IMAGE named a "." no one typed."""
    monkeypatch.chdir(tmp_path)
    assert cli(tmp_path, *args) == 2
    said = "blank" if "  " in args else "empty"
    assert f"the path is {said}" in " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert files_under(tmp_path) == []


def refuse_writes_in(monkeypatch: pytest.MonkeyPatch, folder: Path, code: int) -> list[int]:
    """Make the write check in `folder` fail as a read-only or full disk would, and the first
    epoch raise ReachedEpoch; returns the list that counts the epochs entered."""
    real = tempfile.NamedTemporaryFile

    def named_temporary_file(*args: object, **kwargs: object) -> object:
        if Path(str(kwargs.get("dir"))) == folder:
            raise OSError(code, os.strerror(code), str(folder))
        return real(*args, **kwargs)

    def epoch(*args: object, **kwargs: object) -> None:
        epochs.append(1)
        raise ReachedEpoch

    epochs: list[int] = []
    monkeypatch.setattr(atomic.tempfile, "NamedTemporaryFile", named_temporary_file)
    monkeypatch.setattr(loop, "train_epoch", epoch)
    return epochs


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
@pytest.mark.parametrize("output", ["model_dir", "reports"])
def test_train_finds_an_unwritable_output_folder_before_its_first_epoch(
    tmp_path: Path,
    tiny_data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    output: str,
    code: int,
) -> None:
    (tmp_path / "params.yaml").write_text(TINY)
    folder = getattr(Layout(tmp_path), output)
    before = files_under(tmp_path)
    epochs = refuse_writes_in(monkeypatch, folder, code)
    assert cli(tmp_path, "train") == EXIT_IO
    assert epochs == []
    assert capsys.readouterr().err == f"error: {folder}: {os.strerror(code)}\n"
    new = [tmp_path / f for f in files_under(tmp_path) if f not in before]
    assert all(p.is_dir() and not any(p.iterdir()) for p in new), new  # empty folders at most


def test_without_the_fault_train_reaches_its_first_epoch(
    tmp_path: Path, tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control for the test above: the same project and patches, a writable disk."""
    (tmp_path / "params.yaml").write_text(TINY)
    epochs = refuse_writes_in(monkeypatch, tmp_path / "elsewhere", errno.EROFS)
    with pytest.raises(ReachedEpoch):
        cli(tmp_path, "train")
    assert epochs == [1]


SLOW_WRITE = """
import sys, time
from pathlib import Path
from mnist_pipeline.cli import app
from mnist_pipeline.core.atomic import atomic_path

def slow_write():
    with atomic_path(Path(sys.argv[1])) as temp:
        temp.write_text("half")
        print(temp, flush=True)
        time.sleep(60)

app.app = slow_write
app.main()
"""


def test_sigterm_mid_write_removes_the_temp_file_and_keeps_the_target(tmp_path: Path) -> None:
    """kill / timeout / a stopped container end a command as Ctrl-C does: the unfinished
    write's temp file is removed (DVC would hash it into a tracked folder), the target kept."""
    target = tmp_path / "model.pt"
    target.write_text("what the user had")
    command = [sys.executable, "-c", SLOW_WRITE, str(target)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as writer:
        temp = Path(writer.stdout.readline().strip())
        assert temp.parent == tmp_path and temp.read_text() == "half"
        writer.send_signal(signal.SIGTERM)
        assert writer.wait(timeout=30) == 128 + signal.SIGTERM
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    assert target.read_text() == "what the user had"
    before = signal.getsignal(signal.SIGTERM)
    assert cli(tmp_path, "--help") == 0
    assert signal.getsignal(signal.SIGTERM) is before  # main() in-process leaves it as it was
    codes: list[int] = []  # main() in another thread (no signals there): runs all the same
    thread = threading.Thread(target=lambda: codes.append(cli(tmp_path, "--help")))
    thread.start()
    thread.join(60)
    assert codes == [0] and signal.getsignal(signal.SIGTERM) is before


def test_dvc_ignores_the_temp_files_of_cut_short_writes() -> None:
    """What SIGKILL or a power cut leaves (.<name>.<random>.tmp<suffix>) is no part of a tracked
    folder: .dvcignore names it; an image's own name is not ignored."""
    dvc = str(Path(sys.executable).parent / "dvc")
    check = [dvc, "check-ignore", "--non-matching", "--details"]
    left = "data/extra/3/.0a1b.png.k2j4x9.tmp.png"
    done = subprocess.run(
        [*check, left, "data/extra/3/0a1b.png", "models/.model.pt.abc.tmp.pt"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )
    lines = dict(line.rsplit("\t", 1)[::-1] for line in done.stdout.splitlines())
    assert lines[left].startswith(".dvcignore:"), done.stdout + done.stderr
    assert lines["models/.model.pt.abc.tmp.pt"].startswith(".dvcignore:")
    assert lines["data/extra/3/0a1b.png"] == "::", done.stdout


def test_an_error_naming_a_file_shows_its_control_characters_as_escapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file name's escape sequence is shown, not obeyed by the terminal."""
    (tmp_path / "params.yaml").write_text("{}\n")
    bad = tmp_path / "bad\x1b[2J[bold].png"
    bad.write_bytes(b"not an image")
    assert cli(tmp_path, "data", "add", "-l", "1", str(bad)) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and f"error: {tmp_path}/bad\\x1b[2J[bold].png: not a recog" in err


def test_stage_summaries_show_a_folders_control_characters_as_escapes(
    tmp_path: Path, tiny_mirror: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A summary names the files a stage wrote; a root holding an escape sequence or a newline
    is shown escaped, as errors show it, never obeyed by the terminal or split into lines."""
    import json

    mirror, sha = tiny_mirror
    root = tmp_path / "run\x1b[31m\nred"
    root.mkdir()
    params = {
        "data": {"mirrors": [str(mirror)], "sha256": sha},
        "train": {"epochs": 1, "batch_size": 32, "val_size": 32, "num_threads": 1},
        "evaluate": {"min_accuracy": 0.0, "robustness_per_transform": 0},
    }
    (root / "params.yaml").write_text(json.dumps(params))
    for stage in ("fetch", "ingest", "train", "evaluate", "export", "parity"):
        assert cli(root, stage) == 0, capsys.readouterr()
        out = capsys.readouterr().err  # the summary goes to stderr, as every message
        summary = [line for line in out.splitlines() if "run\\x1b[31m\\nred" in line]
        assert "\x1b" not in out and summary, (stage, out)
        assert not any(line.startswith("red/") for line in out.splitlines()), (stage, out)


@pytest.mark.slow
def test_a_file_name_that_is_not_utf8_is_printed_escaped_not_a_traceback(tmp_path: Path) -> None:
    """Python hands such a name over as surrogate escapes, which a strict UTF-8 stdout (the
    usual terminal) refused half-way through `data list`'s output."""
    import numpy as np
    from PIL import Image

    (tmp_path / "params.yaml").write_text("{}\n")
    folder = tmp_path / "data" / "extra" / "3"
    folder.mkdir(parents=True)
    name = os.fsencode(folder) + b"/caf\xe9.png"  # Latin-1, from an old camera or share
    Image.fromarray(np.full((28, 28), 200, dtype=np.uint8)).save(name, format="PNG")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONPATH": str(REPO_ROOT)}
    listed = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline", "--root", str(tmp_path), "data", "list"],
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr.decode(errors="replace")
    assert b"caf\\udce9.png" in listed.stdout and b"Traceback" not in listed.stderr


def test_a_model_version_for_the_onnx_metadata_must_be_one_printable_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before anything is read: `models/model.onnx` and every input stay as they were."""
    from mnist_pipeline.export.export import checked_model_version

    assert checked_model_version(None) is None and checked_model_version("v1.2 café") == "v1.2 café"
    for bad, said in (
        ("v1\udcff", r"holds '\\udcff' at 2"),
        ("v1\nv2", r"holds '\\n' at 2"),
        ("  ", "is blank"),
        ("v" * 101, "longer than 100"),
    ):
        with pytest.raises(ParamsError, match=said):
            checked_model_version(bad)
    (tmp_path / "params.yaml").write_text("{}\n")  # the params are fine: the version is not
    capsys.readouterr()
    assert cli(tmp_path, "export", "--model-version", "v1\x1b[31m") == 2
    assert "--model-version holds '\\x1b' at 2" in capsys.readouterr().err
    assert files_under(tmp_path) == ["params.yaml"]


def test_stdout_escapes_undecodable_bytes_only_where_it_would_refuse_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A strict UTF-8 stdout gets backslash escapes; one that already writes such bytes back
    (surrogateescape: a C locale, or PYTHONIOENCODING set so) is left as the user has it."""
    import io

    from mnist_pipeline.cli.app import _escape_undecodable

    strict = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    kept = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="surrogateescape")
    monkeypatch.setattr(sys, "stdout", strict)
    monkeypatch.setattr(sys, "stderr", kept)
    _escape_undecodable()
    for stream in (strict, kept):
        stream.write("caf\udce9.png\n")
        stream.flush()
    assert strict.buffer.getvalue() == b"caf\\udce9.png\n"
    assert kept.buffer.getvalue() == b"caf\xe9.png\n"  # the file's own name, byte for byte


def test_a_login_name_that_is_not_utf8_is_escaped_in_the_default_actor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mnist_pipeline.registry.aliases import checked_actor
    from mnist_pipeline.registry.trail import default_actor

    monkeypatch.setenv("LOGNAME", "jos\udce9")
    monkeypatch.setenv("USER", "jos\udce9")
    actor = default_actor()
    assert actor == "user:jos\\udce9" and checked_actor(actor) == actor


def test_a_lock_another_command_holds_past_its_wait_is_one_line_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The inbox's lock held (a long sync, an ingest, a review) past the wait: the error names
    the lock and what to do, not only that "the file lock could not be acquired"."""
    from filelock import FileLock

    from mnist_pipeline.inbox import store
    from tests.example_helpers import draw_digit

    (tmp_path / "params.yaml").write_text("{}\n")
    image = draw_digit(tmp_path / "d.png", 3)
    monkeypatch.setattr(store, "FileLock", lambda path, timeout: FileLock(path, timeout=0.2))
    held = store.lock(Layout(tmp_path).inbox)
    with held:  # another FileLock object must wait for it
        code = cli(tmp_path, "data", "add", "--label", "3", str(image))
    err = " ".join(capsys.readouterr().err.split())
    assert code == EXIT_IO, err
    lock_file = tmp_path / "data" / ".extra.lock"
    assert err.startswith(
        f"error: {lock_file} is still held by another process (another command, or a server "
        "on this folder) after waiting for it: try again when that is done"
    ), err
    assert not (tmp_path / "data" / "extra").exists() or not list(
        (tmp_path / "data" / "extra").rglob("*.png")
    )


def test_a_command_run_outside_a_project_says_where_params_yaml_belongs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (["models", "list"], ["serve"]):
        assert cli(tmp_path, *command) == 2
        assert capsys.readouterr().err == (
            f"error: params file not found: {tmp_path}/params.yaml (commands run in a project "
            "folder holding params.yaml: cd there or pass --root DIR; a params.yaml of `{}` "
            "takes every default)\n"
        )
    (tmp_path / "params.yaml").write_text("{}\n")
    assert cli(tmp_path, "data", "list") == 0, capsys.readouterr().err
