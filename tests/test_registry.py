"""The model registry: register, promote by policy, roll back, resolve verified files, refuse."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.core.errors import GateError, ParamsError, RegistryError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import parse_params
from mnist_pipeline.core.service_params import PromotionParams
from mnist_pipeline.data.manifest import file_sha256
from mnist_pipeline.pipeline.candidate import Candidate, candidate_from_layout
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import Registry
from mnist_pipeline.registry.registration import AliasMoved
from tests.conftest import REPO_ROOT
from tests.promotion_helpers import paired_candidate, write_test_set
from tests.registry_helpers import (
    PARAMS,
    make_candidate,
    model_dir,
    stored,
    write_reports,
    write_train_record,
)


def test_first_version_is_production_with_a_complete_card(registry: Registry, make) -> None:
    candidate = make(1, accuracy=0.97)
    done = register_candidate(registry, candidate, PARAMS)
    assert (done.version, done.alias, done.aliases, done.champion) == (
        1,
        "production",
        ("production",),
        None,
    )
    assert "first version" in done.reason
    card = registry.card("1")
    assert card == registry.card("production") == registry.card("v1")
    assert (
        card["metrics"]["accuracy"] == 0.97 and card["metrics"]["per_class"]["3"]["support"] == 10
    )
    assert card["gate"]["min_accuracy"] == PARAMS.evaluate.min_accuracy
    assert card["params"] == PARAMS.to_dict()
    assert card["data"]["dataset_sha256"] == "d" * 64
    assert card["code"]["git_commit"] == "unknown"  # the candidate folder is not a git repo
    assert card["libraries"]["onnx"] and "torch" in card["libraries"]
    assert card["decision"]["alias"] == "production"
    assert card["created"].endswith("+00:00")
    files = card["files"]
    assert set(files) == {
        "model.onnx",
        "model.pt",
        "model.json",
        "metrics.json",
        "parity.json",
        "train_history.csv",
        "plots/confusion_matrix.png",
    }
    assert files["model.onnx"] == file_sha256(candidate.onnx)
    assert files["model.pt"] == file_sha256(candidate.state_dict)
    copy = registry.fetch("production", "model.onnx")  # a verified copy outside the store
    assert copy.read_bytes() == candidate.onnx.read_bytes() and copy.name == files["model.onnx"]
    assert model_dir(registry) not in copy.parents
    blob = stored(registry, 1, "model.onnx")  # content-addressed, written read-only
    assert blob.read_bytes() == candidate.onnx.read_bytes() and blob.name == files["model.onnx"]
    assert stat.S_IMODE(blob.stat().st_mode) == 0o444
    assert registry.verify() == []


def test_resolved_onnx_runs_in_onnxruntime(registry: Registry, make) -> None:
    import onnxruntime as ort

    register_candidate(registry, make(1), PARAMS)
    session = ort.InferenceSession(
        str(registry.fetch("1", "model.onnx")), providers=["CPUExecutionProvider"]
    )
    (logits,) = session.run(None, {"input": np.zeros((2, 1, 28, 28), np.float32)})
    assert logits.shape == (2, 10)


def test_unpaired_promotion_better_worse_and_min_gain(registry: Registry, make) -> None:
    """Candidates without per-image predictions: recorded accuracy above production's by
    min_gain at least (a tie is no evidence)."""
    register_candidate(registry, make(1, accuracy=0.980), PARAMS)
    better = register_candidate(registry, make(2, accuracy=0.985), PARAMS)
    assert (better.version, better.alias, better.champion) == (2, "production", 1)
    worse = register_candidate(registry, make(3, accuracy=0.984), PARAMS)
    assert (worse.version, worse.alias) == (3, "staging")
    assert worse.reason == (
        "worse than production v2 on MNIST test (unpaired: accuracy 0.9840 vs 0.9850 + min_gain 0)"
    )
    decision = registry.card("3")["decision"]
    assert decision["reason"] == worse.reason
    assert decision["evidence"]["mnist"]["paired"] is False
    # better, but not by min_gain
    promotion = PromotionParams(min_gain=0.005)
    strict = PARAMS.model_copy(
        update={"registry": PARAMS.registry.model_copy(update={"promotion": promotion})}
    )
    small_gain = register_candidate(registry, make(4, accuracy=0.986), strict)
    assert small_gain.alias == "staging" and small_gain.reason == (
        "not significantly better than production v2 on MNIST test (unpaired: accuracy 0.9860 "
        "vs 0.9850 + min_gain 0.005)"
    )  # more accurate, by less than min_gain: not "worse"
    big_gain = register_candidate(registry, make(5, accuracy=0.991), strict)
    assert big_gain.alias == "production"
    equal = register_candidate(registry, make(6, accuracy=0.991), PARAMS)
    assert equal.alias == "staging"  # a tie is not "better", also with min_gain 0
    assert equal.reason.startswith("not significantly better than production v5 on MNIST test")
    assert registry.aliases() == {"production": 5, "staging": 6}
    assert [c["version"] for c in registry.versions()] == [1, 2, 3, 4, 5, 6]


def test_promote_and_rollback_walk_the_production_history(registry: Registry, make) -> None:
    for seed, accuracy in ((1, 0.98), (2, 0.99), (3, 0.97)):
        register_candidate(registry, make(seed, accuracy=accuracy), PARAMS)
    assert registry.aliases() == {"production": 2, "staging": 3}
    assert registry.promote(3, "production") == 2
    assert registry.fetch("production", "model.onnx") == registry.fetch("3", "model.onnx")
    assert registry.rollback() == 2
    assert registry.rollback() == 1
    with pytest.raises(RegistryError, match="no previous version"):
        registry.rollback()
    with pytest.raises(  # not "has no previous version": there is no such alias
        RegistryError,
        match=r"^no alias 'prodution' to roll back \(aliases: production -> v1, staging -> v3\)$",
    ):
        registry.rollback("prodution")
    assert registry.aliases()["production"] == 1
    registry.promote(2, "canary")
    assert registry.card("canary")["version"] == 2
    log = registry.alias_log()
    assert [e["action"] for e in log["events"]][-4:] == [
        "promote",
        "rollback",
        "rollback",
        "promote",
    ]
    assert json.loads((model_dir(registry) / "aliases.json").read_text())["aliases"]["canary"] == 2


def test_two_rollbacks_of_what_both_read_move_production_back_once(
    registry: Registry, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two operators run `models rollback` on production v3: the one second to write finds it
    moved (nothing rolled back), never v3 -> v2 -> v1."""
    for seed, accuracy in ((1, 0.97), (2, 0.98), (3, 0.99)):
        register_candidate(registry, make(seed, accuracy=accuracy), PARAMS)
    assert registry.aliases()["production"] == 3
    assert registry.rollback(expected=3) == 2  # the first operator's
    with pytest.raises(AliasMoved, match="production is v2, no longer v3"):
        registry.rollback(expected=3)  # the second, from what it read before the first wrote
    assert registry.aliases()["production"] == 2
    assert [e["action"] for e in registry.alias_log()["events"]].count("rollback") == 1

    # The CLI rolls back from what it read: another rollback landing in between is refused.
    from typer.testing import CliRunner

    from mnist_pipeline.cli import models as models_cli
    from mnist_pipeline.cli.app import app

    monkeypatch.setattr(models_cli, "existing_registry", lambda ctx: registry)
    read = Registry.aliases

    def read_then_someone_rolls_back(self: Registry) -> dict[str, int]:
        seen = read(self)
        self.rollback()  # the other operator, between this read and the rollback
        return seen

    monkeypatch.setattr(Registry, "aliases", read_then_someone_rolls_back)
    done = CliRunner().invoke(app, ["models", "rollback"])
    monkeypatch.setattr(Registry, "aliases", read)
    assert isinstance(done.exception, RegistryError)  # main() prints it in one line, exit 1
    assert str(done.exception).endswith(
        "production is v1, no longer v2: it moved meanwhile, nothing rolled back"
    )
    assert registry.aliases()["production"] == 1


def test_gated_out_or_parity_failed_candidates_are_refused(registry: Registry, make) -> None:
    with pytest.raises(GateError, match="refusing to register: .*accuracy gate"):
        register_candidate(registry, make(1, passed=False), PARAMS)
    with pytest.raises(GateError, match="below evaluate.min_accuracy"):
        register_candidate(registry, make(2, accuracy=0.85), PARAMS)
    with pytest.raises(GateError, match="parity check failed"):
        register_candidate(registry, make(3, parity_passed=False), PARAMS)
    with pytest.raises(GateError, match="not made from the current model.onnx"):
        register_candidate(registry, make(4, parity_sha="0" * 64), PARAMS)
    with pytest.raises(GateError, match="looser than"):
        register_candidate(registry, make(5, atol=1e-2), PARAMS)
    assert registry.versions() == [] and registry.aliases() == {}
    assert not model_dir(registry).exists()  # refused before anything was stored


def test_weights_trained_with_params_of_another_version_are_refused_in_one_line(
    registry: Registry, tmp_path: Path
) -> None:
    """model.json records the train section it was trained with; a key this version does not
    know (or a value it refuses) is named, with what to do, not a pydantic dump."""
    sections = PARAMS.to_dict()
    train = {**sections["train"], "augment": {**sections["train"]["augment"], "warp_px": 1.0}}
    params = {"model": sections["model"], "train": {**train, "epochs": "many"}}
    candidate = make_candidate(tmp_path / "old", 1, fingerprint={"params": params})
    with pytest.raises(RegistryError) as info:
        register_candidate(registry, candidate, PARAMS)
    message = str(info.value)
    assert "\n" not in message and "pydantic" not in message, message
    assert message.startswith(
        "refusing to register: model.json: its training params do not fit this version of "
        "mnist-pipeline (train.epochs: "
    ), message
    assert "train.augment.warp_px: Extra inputs are not permitted" in message
    assert message.endswith("run `mnist-pipeline train` again")
    no_model = make_candidate(tmp_path / "older", 2, fingerprint={"params": {"train": train}})
    with pytest.raises(RegistryError, match=r"model.json: no valid training params \(no 'model'"):
        register_candidate(registry, no_model, PARAMS)
    assert registry.versions() == []


def test_onnx_replaced_after_parity_is_refused(registry: Registry, make, tmp_path: Path) -> None:
    candidate = make(1)
    make_candidate(tmp_path / "other", 99)
    candidate.onnx.write_bytes((tmp_path / "other" / "model.onnx").read_bytes())
    with pytest.raises(GateError, match="not made from the current model.onnx"):
        register_candidate(registry, candidate, PARAMS)


def test_plots_or_history_of_another_run_are_refused(registry: Registry, make) -> None:
    """evaluate lists its plots in metrics.json, train its history in model.json: a file left
    by a run killed after some of its writes (or changed since) is not registered with them."""
    candidate = make(1)
    plot, history = candidate.plots[0], candidate.train_history
    metrics = json.loads(candidate.metrics.read_text())
    metrics["outputs"] = {f"reports/plots/{plot.name}": file_sha256(plot)}
    candidate.metrics.write_text(json.dumps(metrics))
    record = json.loads(candidate.train_record.read_text())
    record["history_sha256"] = file_sha256(history)
    candidate.train_record.write_text(json.dumps(record))
    good = {path: path.read_bytes() for path in (plot, history)}
    left = plot.parent / "robustness.png"
    damages = [
        (lambda: left.write_bytes(b"\x89PNG"), "plots/robustness.png is not among the files"),
        (lambda: plot.write_bytes(b"\x89PNG"), f"plots/{plot.name} has sha256 .* but metrics"),
        (plot.unlink, f"plots/{plot.name} is missing but metrics.json records"),
        (lambda: history.write_text("epoch,loss\n1,0.9\n"), "model.json was not made from the "),
        (history.unlink, "train_history.csv is missing but model.json records it"),
    ]
    for damage, message in damages:
        damage()
        found = candidate_from_layout_like(candidate)
        with pytest.raises(GateError, match=f"refusing to register: {message}"):
            register_candidate(registry, found, PARAMS)
        left.unlink(missing_ok=True)
        for path, data in good.items():
            path.write_bytes(data)
    assert registry.versions() == []
    assert register_candidate(registry, candidate_from_layout_like(candidate), PARAMS).version == 1


def candidate_from_layout_like(candidate: Candidate) -> Candidate:
    """`candidate` with the plots and history found now, as candidate_from_layout finds them."""
    history = candidate.train_history
    return dataclasses.replace(
        candidate,
        plots=tuple(sorted(candidate.plots[0].parent.glob("*.png"))),
        train_history=history if history.is_file() else None,
    )


def test_the_same_model_files_are_never_a_second_version(registry: Registry, make) -> None:
    candidate = make(1, accuracy=0.97)
    register_candidate(registry, candidate, PARAMS)
    again = register_candidate(registry, candidate, PARAMS)
    assert (again.registered, again.version, again.aliases) == (False, 1, ("production",))
    assert again.summary() == "nothing registered: v1 has the same model.pt and model.onnx"
    assert [card["version"] for card in registry.versions()] == [1]
    assert registry.alias_log()["history"]["production"] == [1]
    # New weights with the same ONNX (or the reverse) are a new version.
    candidate.state_dict.write_bytes(b"other weights")
    with pytest.raises(GateError, match="refusing to register: model.json was not made from"):
        register_candidate(registry, candidate, PARAMS)  # its reports describe the old weights
    write_train_record(candidate.workdir)
    write_reports(candidate.workdir, accuracy=0.97)
    assert register_candidate(registry, candidate, PARAMS).version == 2


def test_same_inputs_are_skipped_only_when_asked(registry: Registry, make) -> None:
    fingerprint = {"sha256": "f" * 64}
    first, second, third = (make(i, fingerprint=fingerprint) for i in (1, 2, 3))
    register_candidate(registry, first, PARAMS)
    skipped = register_candidate(registry, second, PARAMS, skip_same_inputs=True)
    assert not skipped.registered and skipped.version == 1
    assert skipped.reason == "v1 has the same inputs (registered meanwhile)"
    assert register_candidate(registry, third, PARAMS).version == 2  # a forced run: registered


def test_missing_candidate_files_are_named(registry: Registry, make) -> None:
    candidate = make(1)
    candidate.state_dict.unlink()
    with pytest.raises(RegistryError, match="model.pt"):
        register_candidate(registry, candidate, PARAMS)


def test_unknown_refs_list_what_exists(registry: Registry, make) -> None:
    with pytest.raises(RegistryError, match="none registered"):
        registry.card("1")
    register_candidate(registry, make(1), PARAMS)
    with pytest.raises(RegistryError, match=r"unknown version '7' of mnist-cnn; versions: 1"):
        registry.fetch("7", "model.onnx")
    with pytest.raises(RegistryError, match=r"unknown alias 'prod'.*production -> v1"):
        registry.fetch("prod", "model.onnx")
    with pytest.raises(RegistryError, match="unknown version"):
        registry.promote(5, "production")
    for signed in ("-1", "v-2", "+3", "0", "v0", "000"):  # numbers, so not called aliases
        with pytest.raises(RegistryError, match=f"invalid version {re.escape(repr(signed))}: "):
            registry.card(signed)


def test_a_version_number_is_read_without_listing_the_versions(
    registry: Registry, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One request for a card by number (each is a round trip on object storage); an alias
    needs the listing, and so does the error for a version that is not there."""
    register_candidate(registry, make(1), PARAMS)
    storage, listed = registry.storage, []
    real_list = storage.list

    def listing(prefix: str) -> list[str]:
        listed.append(prefix)
        return real_list(prefix)

    monkeypatch.setattr(storage, "list", listing)
    assert registry.card(1)["version"] == 1 and registry.card_with_bytes("v1")[0]["version"] == 1
    assert registry.read_file("1", "model.onnx") == make(1).onnx.read_bytes()
    assert listed == []
    assert registry.card("production")["version"] == 1 and listed
    with pytest.raises(RegistryError, match=r"unknown version 'v2' of mnist-cnn; versions: 1"):
        registry.card("v2")
    real_read, first = storage.read, []

    def committed_meanwhile(key: str) -> bytes | None:  # absent at the first read, then there
        if key.endswith("v1/card.json") and not first:
            first.append(key)
            return None
        return real_read(key)

    monkeypatch.setattr(storage, "read", committed_meanwhile)
    assert registry.card(1)["version"] == 1 and first


def test_a_description_is_sealed_as_it_is_stored(registry: Registry) -> None:
    """Keys that JSON turns into strings (here ints, which sort differently as strings) must not
    make a version fail its own seal; a value JSON cannot hold is refused, nothing stored."""
    from mnist_pipeline.registry import Decision, Submission

    first = Decision("production", "first")
    done = registry.register(Submission({"a.bin": b"a"}, {"notes": {2: "b", 10: "a"}}, first))
    assert registry.verify() == [] and registry.card(done.version)["notes"] == {"2": "b", "10": "a"}
    later = Submission({"a.bin": b"b"}, {"notes": object()}, Decision("staging", "second"))
    with pytest.raises(RegistryError, match="description cannot be stored as JSON"):
        registry.register(later)
    deep: object = "leaf"
    for _ in range(100):  # JSON, but nested deeper than any reader of a card takes
        deep = [deep]
    too_deep = Submission({"a.bin": b"d"}, {"notes": deep}, Decision("production", "deep"))
    with pytest.raises(RegistryError, match="description cannot be stored as JSON.*nest"):
        registry.register(too_deep)  # committed, it could never be read (nor collected)
    assert registry.version_numbers() == [1] and registry.garbage() == []
    proof = Decision("staging", "second", 1, {"counts": {2: 1, 10: 0}})  # the evidence too
    done = registry.register(Submission({"a.bin": b"c"}, {}, proof))
    assert registry.verify() == [] and registry.card(done.version)["decision"]["counts"] == {
        "2": 1,
        "10": 0,
    }


def test_an_alias_moved_to_a_version_committed_after_the_listing_resolves(
    registry: Registry, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The versions are listed before the alias document is read: a registration that commits
    v2 and records it as production in between must not make production unresolvable."""
    register_candidate(registry, make(1, accuracy=0.97), PARAMS)
    register_candidate(registry, make(2, accuracy=0.99), PARAMS)
    listings = iter([[1]])  # the first listing was taken before v2 was committed
    actual = registry.version_numbers
    monkeypatch.setattr(registry, "version_numbers", lambda: next(listings, None) or actual())
    assert registry.version_of("production") == 2
    assert registry.version_of("production") == 2
    listings = iter([[1]])  # `models verify` while v2 commits: nothing is damaged
    assert registry.verify() == []


@pytest.mark.parametrize("name", ["", "../x", "a/b", "..", ".hidden", "A", "x" * 65, "a..b", "a b"])
def test_bad_model_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(RegistryError, match="invalid model name"):
        Registry(tmp_path, name)


@pytest.mark.parametrize(
    "alias", ["../production", "prod/x", "7", "v7", "v-1", "v+2", "Production", "..", ""]
)
def test_bad_aliases_are_refused(registry: Registry, make, alias: str) -> None:
    register_candidate(registry, make(1), PARAMS)
    with pytest.raises(RegistryError, match="invalid alias"):
        registry.promote(1, alias)
    named = re.escape(repr(alias))  # "7" and "v7" read as version numbers, "v-1" as a bad one
    with pytest.raises(RegistryError, match=rf"^(invalid alias|(invalid|unknown) version) {named}"):
        registry.fetch(alias, "model.onnx")


def test_lineage_reads_git_and_dvc_lock(registry: Registry, make, tmp_path: Path) -> None:
    candidate = make(1)
    work = candidate.workdir
    assert work is not None
    (work / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  fetch:\n    cmd: x\n    outs:\n"
        "    - path: data/mnist\n      hash: md5\n      md5: abc123.dir\n"
    )
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for args in (["init", "-q"], ["add", "model.onnx"], ["commit", "-q", "-m", "x"]):
        subprocess.run(["git", *args], cwd=work, check=True, env=env)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True)
    card = registry.card(register_candidate(registry, candidate, PARAMS).version)
    # The dataset identity comes from the run's own report, never from a (maybe stale) dvc.lock.
    assert card["data"] == {"dataset_sha256": "d" * 64, "extra_sha256": "none"}
    assert "abc123" not in json.dumps(card)
    assert card["origin"] == {"kind": "cli"}
    assert card["code"] == {"git_commit": head.stdout.strip(), "git_dirty": True}


def test_candidate_from_layout_gathers_pipeline_outputs(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "work")
    with pytest.raises(RegistryError, match=r"model.onnx \(run `mnist-pipeline export`\)"):
        candidate_from_layout(layout)
    write_test_set(layout.data_dir)
    built = paired_candidate(tmp_path / "src", 1, range(5), layout.data_dir)
    for src, dst in (
        (built.onnx, layout.onnx),
        (built.state_dict, layout.state_dict),
        (built.train_record, layout.train_record),
        (built.metrics, layout.metrics),
        (built.predictions, layout.predictions),
        (built.parity, layout.parity_report),
        (built.plots[0], layout.plots / "confusion_matrix.png"),
    ):
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    # a killed evaluate's temp file stays beside its plot, hidden: no stage takes it
    (layout.plots / ".robustness.png.k3j2x.tmp.png").write_bytes(b"\x89PNG half")
    candidate = candidate_from_layout(layout)
    assert candidate.train_history is None and candidate.workdir == layout.root
    assert candidate.plots == (layout.plots / "confusion_matrix.png",)
    assert (candidate.predictions, candidate.data_dir) == (layout.predictions, layout.data_dir)
    done = register_candidate(
        Registry(layout.registry_root("registry"), "mnist-cnn"), candidate, PARAMS
    )
    assert (done.name, done.version, done.alias) == ("mnist-cnn", 1, "production")
    assert (layout.root / "registry" / "mnist-cnn" / "v1" / "card.json").is_file()


def test_registry_import_and_resolve_stay_torch_free(registry: Registry, make) -> None:
    register_candidate(registry, make(1), PARAMS)
    code = (
        "import sys\n"
        "import mnist_pipeline.cli.app, mnist_pipeline.cli.models\n"
        "from mnist_pipeline.registry import Registry\n"
        "import onnxruntime as ort, numpy as np\n"
        f"data = Registry({str(registry.root)!r}, 'mnist-cnn').read_file('production', "
        "'model.onnx')\n"
        "s = ort.InferenceSession(data, providers=['CPUExecutionProvider'])\n"
        "s.run(None, {'input': np.zeros((1, 1, 28, 28), np.float32)})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_params_name_rule_matches_the_registry() -> None:
    with pytest.raises(ParamsError, match="registry.model_name"):
        parse_params({"registry": {"model_name": "MNIST"}})


def test_a_verified_copy_is_written_only_with_the_bytes_its_name_promises(tmp_path: Path) -> None:
    """fetch names the copy by one reading of the card and `read()` checks another: bytes that
    match the second and not the first must not be handed out under the first's name."""
    import hashlib

    from mnist_pipeline.registry.copies import verified_copy

    named = hashlib.sha256(b"the bytes the card named").hexdigest()
    with pytest.raises(RegistryError, match="the bytes read are not the ones named"):
        verified_copy(tmp_path, named, lambda: b"other bytes")
    assert not (tmp_path / named).exists()
    copy = verified_copy(tmp_path, named, lambda: b"the bytes the card named")
    assert copy.read_bytes() == b"the bytes the card named"


def test_the_card_names_the_opset_of_the_registered_file(registry: Registry, make) -> None:
    """params.yaml's export.opset changed after the export, and `models register` run without
    exporting again: the card says what model.onnx is (opset 18), not what params say now."""
    later = PARAMS.model_copy(update={"export": PARAMS.export.model_copy(update={"opset": 20})})
    register_candidate(registry, make(1), later)
    assert registry.card(1)["params"]["export"]["opset"] == 18
    register_candidate(registry, make(2, accuracy=0.99), PARAMS)
    assert registry.card(2)["params"]["export"] == PARAMS.to_dict()["export"]
