"""`mnist-pipeline models ...` on a working directory laid out as the pipeline leaves it."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner, Result

from mnist_pipeline.cli import models as models_cli
from mnist_pipeline.cli.app import app
from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import TrainParams
from mnist_pipeline.core.text import printable
from mnist_pipeline.data.manifest import file_sha256
from mnist_pipeline.registry import Registry
from tests.conftest import REPO_ROOT
from tests.promotion_helpers import TEST, paired_candidate, write_test_set
from tests.registry_helpers import stored, writable
from tests.synthetic import make_dataset, write_data_dir

runner = CliRunner()


def produce(workdir: Path, seed: int, accuracy: float) -> None:
    """Write models/ and reports/ as train, evaluate, export and parity would."""
    layout = Layout(workdir)
    write_data_dir(layout.data_dir, make_dataset())
    write_test_set(layout.data_dir)  # MNIST test: images whose answers each model sets
    wrong = range(round((1 - accuracy) * TEST))
    built = paired_candidate(workdir / f"src{seed}", seed, wrong, layout.data_dir)
    pairs = [
        (built.onnx, layout.onnx),
        (built.state_dict, layout.state_dict),
        (built.train_record, layout.train_record),
        (built.metrics, layout.metrics),
        (built.predictions, layout.predictions),
        (built.parity, layout.parity_report),
        (built.train_history, layout.train_history),
        *((plot, layout.plots / plot.name) for plot in built.plots),
    ]
    for src, dst in pairs:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    params = {"evaluate": {"min_accuracy": 0.9}, "registry": {"promotion": {"significance": 0.01}}}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    return work


def models(workdir: Path, *args: str):
    opts = ["--root", str(workdir), "--params", str(workdir / "params.yaml")]
    return runner.invoke(app, [*opts, "models", *args])


def test_register_list_show_resolve_promote_rollback_verify(workdir: Path) -> None:
    produce(workdir, 1, 0.95)
    first = models(workdir, "register")
    assert first.exit_code == 0, first.output
    assert "v1 as production" in first.output
    produce(workdir, 2, 0.9514)  # one more test image right: not significantly better
    second = models(workdir, "register")
    assert "v2 as staging: not significantly better than production v1" in second.output
    assert "(n10 1 / n01 0, p 1)" in second.output

    listed = models(workdir, "list")
    assert listed.exit_code == 0
    rows = [line for line in listed.output.splitlines() if "0.95" in line]
    assert len(rows) == 2 and "production" in rows[0] and "staging" in rows[1]
    assert "warning:" not in listed.output  # every alias points at a version

    card = json.loads(models(workdir, "show", "staging", "--json").stdout)
    assert card["version"] == 2 and card["metrics"]["accuracy"] == 666 / 700
    assert card["decision"]["evidence"]["significance"] == 0.01
    summary = models(workdir, "show", "v2").stdout.splitlines()
    assert summary[0] == "mnist-cnn v2  aliases: staging"
    assert "accuracy     0.9514 (666/700), loss 0.0500" in summary
    assert "evidence     MNIST test: same, n10 1 / n01 0, p 1, gain +0.0014" in summary[6]
    assert f"onnx         sha256 {card['files']['model.onnx']}" in summary
    assert "extra        none (trained on MNIST alone)" in summary
    assert len(summary) == 13 and all(len(line) <= 110 for line in summary), summary
    path = Path(models(workdir, "resolve", "production").stdout.strip())  # a verified copy
    first = json.loads(models(workdir, "show", "v1", "--json").stdout)["files"]["model.onnx"]
    assert path.name == first and file_sha256(path) == first
    assert workdir / "registry" not in path.parents

    assert models(workdir, "promote", "v2", "--alias", "production").exit_code == 0
    path = Path(models(workdir, "resolve", "production").stdout.strip())
    assert path.name == card["files"]["model.onnx"]
    assert "production -> v1" in models(workdir, "rollback").output
    typo = models(workdir, "promote", "2", "--alias", "prodution")  # never created by a typo
    assert isinstance(typo.exception, RegistryError)
    assert "no alias 'prodution' yet (aliases: production -> v1, staging -> v2); add --new-" in str(
        typo.exception
    )
    assert "prodution" not in models(workdir, "history", "--json").stdout
    for bad in ("", "A", "a/b", "v3"):  # no flag makes these valid: never "add --new-alias"
        for command in (("promote", "2"), ("rollback",)):  # a usage error, as a bad VERSION
            refused = models(workdir, *command, "--alias", bad)
            assert refused.exit_code == 2, refused.output
            assert "Invalid value for '--alias': invalid alias" in refused.output
            assert repr(bad) in refused.output
    created = models(workdir, "promote", "2", "--alias", "canary", "--new-alias")
    assert created.exit_code == 0 and "canary: nothing -> v2" in created.output
    assert models(workdir, "verify").exit_code == 0


def test_a_version_argument_that_is_no_number_is_refused_before_anything_moves(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # the error box on one line
    produce(workdir, 1, 0.95)
    assert models(workdir, "register").exit_code == 0
    before = models(workdir, "history", "--json").stdout
    for command in ("promote", "approve", "reject"):
        refused = models(workdir, command, "production")
        assert refused.exit_code == 2
        assert "expected a version number such as 3 or v3, got 'production'" in refused.output
        huge = models(workdir, command, "9" * 20)  # as `show` refuses it: a usage error
        assert huge.exit_code == 2 and "over 18 digits" in huge.output, huge.output
    assert models(workdir, "history", "--json").stdout == before


def test_a_malformed_reference_is_a_usage_error_and_an_unknown_one_a_failure(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VERSION|ALIAS no registry could hold is refused as a bad VERSION is (exit 2, before
    the registry is read); a well-formed one the registry lacks is a failure (exit 1)."""
    monkeypatch.setenv("COLUMNS", "250")  # the error box on one line
    produce(workdir, 1, 0.95)
    assert models(workdir, "register").exit_code == 0
    bad_refs = (
        ("v 1", "invalid alias 'v 1'"),
        ("-1", "invalid version '-1'"),
        ("0", "invalid version '0'"),
    )
    for bad, why in bad_refs:
        for command in ("show", "resolve"):
            refused = models(workdir, command, "--", bad)
            assert refused.exit_code == 2, refused.output
            assert f"Invalid value for 'VERSION|ALIAS': {why}" in refused.output
        refused = models(workdir, "history", "--", bad)
        assert refused.exit_code == 2 and "Invalid value for '[ALIAS]'" in refused.output
    unknown = models(workdir, "show", "v7")
    assert unknown.exit_code == 1 and isinstance(unknown.exception, RegistryError)
    assert "unknown version 'v7' of mnist-cnn" in str(unknown.exception)


def usage_error(result: Result, message: str) -> None:
    """`result` is a usage error (exit 2) whose box holds `message`."""
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.replace("│", " ").split()), result.output


def test_a_comment_or_actor_that_is_not_one_printable_line_moves_nothing(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newline would make one audit event read as two rows of `models history`, and an
    escape sequence would reach every terminal that shows it."""
    monkeypatch.setenv("COLUMNS", "250")
    for seed, accuracy in ((1, 0.95), (2, 0.9505)):
        produce(workdir, seed, accuracy)
        assert models(workdir, "register").exit_code == 0
    before = models(workdir, "history", "--json").stdout
    for option, text, shown in (
        ("--comment", "line1\nline2", "'\\n' at 5"),
        ("--comment", "red\x1b[31m", "'\\x1b' at 3"),
        ("--actor", "user:a\tb", "'\\t' at 6"),
    ):
        what = option.removeprefix("--")
        usage_error(
            models(workdir, "promote", "2", option, text),
            f"Invalid value for '{option}': the {what} holds a control character "
            f"({shown.replace(chr(92) * 2, chr(92))}): give one line of printable text",
        )
    usage_error(  # a Latin-1 é
        models(workdir, "promote", "2", "--comment", "caf\udce9 fix"),
        "the comment holds a byte that is not UTF-8 ('\\udce9' at 3): give one line of "
        "printable text in UTF-8",
    )  # stored, it would have broken `models history` for good (the trail cannot be edited)
    assert printable("caf\udce9") == "caf\\udce9"
    usage_error(models(workdir, "promote", "2", "--comment", "x" * 2001), "2,001 characters")
    for nobody in ("  ", ""):  # an event that names nobody (empty: not replaced by the user)
        usage_error(
            models(workdir, "approve", "2", "--actor", nobody),
            "the actor is blank: name who makes this move (or leave it out)",
        )
    assert models(workdir, "history", "--json").stdout == before
    assert models(workdir, "promote", "2", "--comment", "geprüft: ok").exit_code == 0


def test_rollback_to_a_card_sealed_again_without_its_model_moves_nothing(workdir: Path) -> None:
    from tests.test_registry_integrity import reseal

    for seed, accuracy in ((1, 0.95), (2, 0.9505)):
        produce(workdir, seed, accuracy)
        assert models(workdir, "register").exit_code == 0
    assert models(workdir, "promote", "2").exit_code == 0
    registry = Registry(workdir / "registry", "mnist-cnn")
    reseal(registry, 1, lambda card: card["files"].pop("model.onnx"))
    before = models(workdir, "history", "--json").stdout
    refused = models(workdir, "rollback")
    assert isinstance(refused.exception, RegistryError), refused.output
    assert str(refused.exception).startswith(
        "v1 cannot be rolled back to: the card lists no model.onnx"
    )
    assert models(workdir, "history", "--json").stdout == before


def test_history_lists_who_moved_each_alias_and_why(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the table's rows on one line each: a console whose width is not the one rich fixed
    # from COLUMNS when the module was first imported (any earlier test may have done it)
    monkeypatch.setattr(models_cli, "out", Console(width=250))
    for seed, accuracy in ((1, 0.95), (2, 0.9505)):
        produce(workdir, seed, accuracy)
        assert models(workdir, "register").exit_code == 0
    promoted = models(
        workdir, "promote", "2", "--comment", "checked by hand", "--actor", "user:eve"
    )
    assert promoted.exit_code == 0, promoted.output
    assert models(workdir, "rollback", "--comment", "eve was wrong").exit_code == 0
    events = json.loads(models(workdir, "history", "production", "--json").stdout)
    assert [(e["action"], e["version"], e["actor"]) for e in events] == [
        ("register", 1, f"user:{getpass.getuser()}"),
        ("promote", 2, "user:eve"),
        ("rollback", 1, f"user:{getpass.getuser()}"),
    ]
    assert [e["evidence"].get("comment") for e in events] == [
        None,
        "checked by hand",
        "eve was wrong",
    ]
    typo = models(workdir, "history", "prodution")
    assert typo.exit_code == 1
    assert str(typo.exception) == (
        "no alias 'prodution' in the history of mnist-cnn; aliases: production, staging"
    )
    staging = json.loads(models(workdir, "history", "staging", "--json").stdout)
    assert [(e["action"], e["version"]) for e in staging] == [("register", 2)]
    rows = [line for line in models(workdir, "history").stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 4
    assert "promote" in rows[2] and "user:eve" in rows[2] and "(checked by hand)" in rows[2]
    cells = [[cell.strip() for cell in row.strip("│").split("│")] for row in rows]
    assert [c[1:5] for c in cells] == [  # action, alias, version, previous
        ["register", "production", "v1", "-"],
        ["register", "staging", "v2", "-"],
        ["promote", "production", "v2", "v1"],
        ["rollback", "production", "v1", "v2"],
    ]
    monkeypatch.setattr(models_cli, "out", Console(width=80))  # a pipe, a CI log: cells wrap
    narrow = models(workdir, "history").stdout
    assert "…" not in narrow and "(checked" in narrow and "by hand)" in narrow, narrow


def test_verify_exits_1_listing_problems(workdir: Path) -> None:
    produce(workdir, 1, 0.95)
    models(workdir, "register")
    registry = Registry(workdir / "registry", "mnist-cnn")
    stored(registry, 1, "plots/confusion_matrix.png").unlink()
    stray = workdir / "registry" / "mnist-cnn" / "v7" / "sub" / "f"  # a copy left by hand
    stray.parent.mkdir(parents=True)
    stray.write_text("x")
    (stray.parents[2] / "v1" / "notes.txt").write_text("x")
    result = models(workdir, "verify")
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "v1: plots/confusion_matrix.png is missing" in output
    assert "v1: notes.txt is not listed in the card" in output
    assert "v7/ holds sub/f but no card.json: not a version" in output


def registered_with_v2_unreadable(workdir: Path, accuracies: tuple[float, ...]) -> None:
    """One registered version per accuracy, then v2's card overwritten with broken JSON."""
    for seed, accuracy in enumerate(accuracies, 1):
        produce(workdir, seed, accuracy)
        assert models(workdir, "register").exit_code == 0
    card = workdir / "registry" / "mnist-cnn" / "v2" / "card.json"
    os.chmod(card, 0o644)
    card.write_text("{not json")


def test_verify_of_an_unreadable_card_lists_it_and_does_not_count_garbage(workdir: Path) -> None:
    registered_with_v2_unreadable(workdir, (0.95, 0.96))
    result = models(workdir, "verify")
    assert result.exit_code == 1 and not isinstance(result.exception, RegistryError)
    assert "mnist-cnn v2 card is not readable JSON" in result.output
    assert "unreferenced objects not counted: mnist-cnn v2: card.json is unreadable" in (
        " ".join(result.output.split())
    )


def test_gc_says_what_it_kept_for_being_young_and_min_age_removes_it(workdir: Path) -> None:
    produce(workdir, 1, 0.95)
    assert models(workdir, "register").exit_code == 0
    Registry(workdir / "registry", "mnist-cnn").storage.create(
        f"mnist-cnn/blobs/sha256/{'0' * 64}", b"a registration storing it"
    )
    kept = models(workdir, "gc")
    assert kept.exit_code == 0, kept.output
    assert "removed 0 unreferenced object(s); 1 younger than 3600 s kept" in kept.output
    assert "1 unreferenced object(s)" in models(workdir, "verify").output
    removed = models(workdir, "gc", "--min-age", "0")
    assert removed.exit_code == 0 and "removed 1 unreferenced object(s)\n" in removed.output
    assert models(workdir, "gc", "--min-age", "-1").exit_code == 2
    not_a_number = models(workdir, "gc", "--min-age", "nan")
    assert not_a_number.exit_code == 2 and "must be a number of seconds" in not_a_number.output


def test_list_shows_the_intact_versions_and_marks_a_damaged_one(workdir: Path) -> None:
    registered_with_v2_unreadable(workdir, (0.95, 0.96, 0.97))
    result = models(workdir, "list")
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.output.splitlines() if "│" in line}
    assert "0.9500" in rows["1"] and "0.9700" in rows["3"] and "refused" in rows["2"]
    assert "refused: " in result.output and "v2" in result.output


def test_list_warns_of_an_alias_pointing_at_no_version(workdir: Path) -> None:
    """aliases.json edited to name v99: the table has no row to show it on, so a warning says
    where it points (verify reports it too)."""
    produce(workdir, 1, 0.95)
    assert models(workdir, "register").exit_code == 0
    aliases = writable(workdir / "registry" / "mnist-cnn" / "aliases.json")
    document = json.loads(aliases.read_text())
    document["aliases"]["production"] = 99
    aliases.write_text(json.dumps(document))
    result = models(workdir, "list")
    assert result.exit_code == 0, result.output
    assert "warning: production point(s) at v99, which does not exist" in " ".join(
        result.output.split()
    )


def test_register_without_outputs_names_what_is_missing(workdir: Path) -> None:
    result = models(workdir, "register")
    assert isinstance(result.exception, RegistryError)
    assert "run `mnist-pipeline export`" in str(result.exception)
    produce(workdir, 1, 0.95)
    Layout(workdir).train_record.unlink()
    result = models(workdir, "register")
    assert isinstance(result.exception, RegistryError)
    assert "model.json (run `mnist-pipeline train`)" in str(result.exception)


def test_the_card_takes_params_and_fingerprint_from_the_training_record(workdir: Path) -> None:
    """params.yaml edited after training (no retraining) does not change what the card says
    the weights were trained with; registering needs no dataset (the record has its hash)."""
    produce(workdir, 1, 0.95)
    shutil.rmtree(Layout(workdir).data_dir)
    (workdir / "params.yaml").write_text("train:\n  epochs: 7\nevaluate:\n  min_accuracy: 0.5\n")
    assert models(workdir, "register").exit_code == 0
    record = json.loads(Layout(workdir).train_record.read_text())
    card = Registry(workdir / "registry", "mnist-cnn").card("1")
    assert card["params"]["train"] == record["fingerprint"]["params"]["train"]
    assert card["params"]["train"]["epochs"] == TrainParams().epochs != 7  # as trained
    assert card["params"]["evaluate"]["min_accuracy"] == 0.5  # the gate applied now
    assert card["fingerprint"] == record["fingerprint"]


def test_errors_are_one_clean_line(workdir: Path) -> None:
    produce(workdir, 1, 0.95)
    models(workdir, "register")
    onnx = stored(Registry(workdir / "registry", "mnist-cnn"), 1, "model.onnx")
    os.chmod(onnx, 0o644)
    onnx.write_bytes(b"tampered")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_pipeline",
            "--root",
            str(workdir),
            "--params",
            str(workdir / "params.yaml"),
            "models",
            "resolve",
            "production",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(workdir / "cache")},  # no verified copy yet
    )
    assert done.returncode == 1 and done.stdout == ""
    assert "refusing to load mnist-cnn v1: model.onnx was modified" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_registry_folder_that_does_not_exist_is_named_not_read_as_empty(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("registry:\n  root: registyr\n")  # a typo
    for command in (["list"], ["verify"], ["gc"], ["show", "1"]):
        done = CliRunner().invoke(app, ["--root", str(tmp_path), "models", *command])
        assert isinstance(done.exception, RegistryError), (command, done.output)
        assert f"no registry folder at {tmp_path / 'registyr'}" in str(done.exception)
    assert not (tmp_path / "registyr").exists()  # gc created nothing


def test_a_mistyped_model_name_or_a_registry_that_is_a_file_is_named(workdir: Path) -> None:
    produce(workdir, 1, 0.95)
    assert models(workdir, "register").exit_code == 0
    params = workdir / "params.yaml"
    typo = {**yaml.safe_load(params.read_text()), "registry": {"model_name": "mnist-cmn"}}
    other = workdir / "typo.yaml"
    other.write_text(yaml.safe_dump(typo))
    for command in (["list"], ["verify"], ["gc"]):
        opts = ["--root", str(workdir), "--params", str(other)]
        done = runner.invoke(app, [*opts, "models", *command])
        assert isinstance(done.exception, RegistryError), (command, done.output)
        assert str(done.exception) == (
            f"no model 'mnist-cmn' in the registry at {workdir / 'registry'} "
            "(registry.model_name); models there: mnist-cnn"
        )
    assert not (workdir / "registry" / "mnist-cmn").exists()  # gc created nothing
    (workdir / "file").write_text("not a registry")
    params.write_text(
        yaml.safe_dump({**yaml.safe_load(params.read_text()), "registry": {"root": "file"}})
    )
    for command in ("verify", "register"):  # register too: a registry problem (1), not I/O
        done = models(workdir, command)
        assert isinstance(done.exception, RegistryError), (command, done.output)
        assert (
            str(done.exception)
            == f"{workdir / 'file'} (registry.root 'file') is a file, not a registry folder"
        )
    assert (workdir / "file").read_text() == "not a registry"


def test_versions_by_number_stay_readable_when_the_aliases_are_not(workdir: Path) -> None:
    """A damaged aliases.json: `models show 1` and `models list` still show the versions, with
    the aliases unknown and why; moving an alias is refused."""
    produce(workdir, 1, 0.95)
    assert models(workdir, "register").exit_code == 0
    aliases = workdir / "registry" / "mnist-cnn" / "aliases.json"
    aliases.chmod(0o644)
    aliases.write_text("{")
    shown = models(workdir, "show", "1")
    assert shown.exit_code == 0, shown.output
    assert "version" in shown.output and "aliases unknown: " in shown.output
    listed = models(workdir, "list")
    assert (
        listed.exit_code == 0 and "0.9500" in listed.output and "aliases unknown" in listed.output
    )
    refused = models(workdir, "promote", "1")
    assert isinstance(refused.exception, RegistryError), refused.exception
    assert "aliases.json is not readable JSON: " in str(refused.exception)
    assert aliases.read_text() == "{"  # left as it was, for the operator to repair


def test_a_registry_path_with_brackets_is_printed_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    workdir = Path("X[", "bold]")  # --root X[/bold]: rich markup, if printed as such
    workdir.mkdir(parents=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"min_accuracy": 0.9}}))
    produce(workdir, 1, 0.95)
    assert models(workdir, "register").exit_code == 0
    listed = models(workdir, "list")
    assert listed.exit_code == 0, (listed.output, listed.exception)
    assert "X[/bold]/registry" in listed.output.replace("\n", "")


def test_stored_text_in_a_card_is_listed_as_it_is_and_a_huge_version_is_refused(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A card sealed again with markup in `created` made `models list` end in a MarkupError
    traceback; a version of 5,000 digits made `show` and `resolve` end in int()'s."""
    from tests.test_registry_integrity import reseal

    produce(workdir, 1, 0.95)
    assert models(workdir, "register").exit_code == 0
    reseal(Registry(workdir / "registry", "mnist-cnn"), 1, lambda c: c.update(created="[/oops]"))
    listed = models(workdir, "list")
    assert listed.exit_code == 0 and "[/oops]" in listed.output, (listed.output, listed.exception)
    monkeypatch.setenv("COLUMNS", "250")  # the error box on one line
    for command in ("show", "resolve"):
        refused = models(workdir, command, "9" * 5000)
        assert refused.exit_code == 2, (command, refused.exception)  # a usage error
        assert "invalid version 99999999999999999999...: over 18 digits" in refused.output


def test_registering_the_same_run_again_brings_back_productions_lost_model(
    workdir: Path,
) -> None:
    """The store lost production's model.onnx: `models register` of the same run compares with
    production, which reads that file, so the lost blob is stored again first (before: the
    comparison failed, "model.onnx is missing", and the file stayed lost)."""
    produce(workdir, 1, 0.95)
    assert models(workdir, "register").exit_code == 0
    registry = Registry(workdir / "registry", "mnist-cnn")
    onnx = stored(registry, 1, "model.onnx")
    original = onnx.read_bytes()
    onnx.unlink()
    assert any("model.onnx is missing" in p for p in registry.verify())
    again = models(workdir, "register")
    assert again.exit_code == 0, (again.output, again.exception)
    assert "v1" in again.output and registry.verify() == []
    assert registry.read_file("1", "model.onnx") == original


def test_no_home_folder_for_the_cache_is_one_line(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No XDG_CACHE_HOME, no HOME and no passwd entry (some containers): resolving a version,
    which makes a verified copy in the cache, says what to set instead of a traceback."""
    produce(workdir, 1, 0.95)
    assert models(workdir, "register").exit_code == 0
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    done = models(workdir, "resolve", "1")
    assert isinstance(done.exception, RegistryError), (done.output, done.exception)
    assert "set XDG_CACHE_HOME (or HOME)" in str(done.exception)


def test_a_card_sealed_again_without_its_model_is_reported_shown_and_not_promoted(
    workdir: Path,
) -> None:
    """Without a signing key anyone who can write the registry can edit a card and seal it
    again (the seal is an unkeyed hash): one that lists no model.onnx is a problem for verify,
    `models show` says so instead of a traceback, and `models promote` refuses it."""
    from mnist_pipeline.registry.card import seal

    produce(workdir, 1, 0.95)
    assert models(workdir, "register").exit_code == 0
    card_file = writable(workdir / "registry" / "mnist-cnn" / "v1" / "card.json")
    card = json.loads(card_file.read_text())
    del card["files"]["model.onnx"]
    card_file.write_text(json.dumps(seal(card)))
    verified = models(workdir, "verify")
    assert verified.exit_code == 1
    assert "the card lists no model.onnx" in " ".join(verified.output.split())
    shown = models(workdir, "show", "1")
    assert shown.exit_code == 0, shown.output
    assert "onnx         sha256 none: the card lists no model.onnx" in shown.output
    promoted = models(workdir, "promote", "1", "--alias", "staging")
    assert isinstance(promoted.exception, RegistryError), promoted.output
    assert str(promoted.exception).startswith(
        "v1 cannot be promoted: the card lists no model.onnx;"
    )
    assert "staging" not in models(workdir, "history", "--json").stdout
