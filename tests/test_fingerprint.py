"""The inputs fingerprint: same inputs, same hash; any input that shapes the weights changes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from mnist_pipeline.core.imports import SOURCE_ROOT, import_closure
from mnist_pipeline.core.params import parse_params
from mnist_pipeline.data import idx
from mnist_pipeline.data.manifest import dataset_sha256
from mnist_pipeline.inbox import extra
from mnist_pipeline.training.fingerprint import TRAIN_MODULE, code_sha256, inputs_fingerprint
from tests.synthetic import make_dataset, write_data_dir


def test_same_inputs_same_fingerprint(tiny_data_dir: Path) -> None:
    first = inputs_fingerprint(parse_params({}), tiny_data_dir)
    assert first == inputs_fingerprint(parse_params({}), tiny_data_dir)
    assert first["dataset_sha256"] == dataset_sha256(tiny_data_dir)
    assert first["code_sha256"] == code_sha256()
    assert set(first["params"]) == {"model", "train"}
    assert len(first["sha256"]) == 64


def test_params_that_shape_the_weights_change_it(tiny_data_dir: Path) -> None:
    params = parse_params({})
    found = inputs_fingerprint(params, tiny_data_dir)
    base = found["sha256"]
    # every model and train setting is an input (the recipe, augmentation, regularisation)
    assert found["params"] == {
        "model": params.model.model_dump(mode="json"),
        "train": params.train.model_dump(mode="json"),
    }
    for changed in (
        {"train": {"epochs": 3}},
        {"train": {"seed": 2}},
        {"model": {"arch": "wide"}},
        {"train": {"augment": {"enabled": False}}},
        {"train": {"augment": {"rotate_deg": 5.0}}},
        {"train": {"max_learning_rate": 0.004}},
        {"train": {"dropout": 0.25}},
        {"train": {"label_smoothing": 0.1}},
    ):
        assert inputs_fingerprint(parse_params(changed), tiny_data_dir)["sha256"] != base, changed
    # The gate, the export and the registry do not change what training learns.
    same = {"evaluate": {"min_accuracy": 0.5}, "export": {"opset": 17}, "registry": {"root": "x"}}
    assert inputs_fingerprint(parse_params(same), tiny_data_dir)["sha256"] == base


def test_other_data_changes_it(tiny_data_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_data_dir(other, make_dataset(seed=7))
    params = parse_params({})
    # the hash, which decides whether a run trains, not merely the recorded dataset field
    other_sha256 = inputs_fingerprint(params, other)["sha256"]
    assert other_sha256 != inputs_fingerprint(params, tiny_data_dir)["sha256"]


def _write_extra(extra_dir: Path, train_labels: list[int]) -> None:
    """An ingested extra folder as ingest leaves it: these train labels, an empty holdout."""
    extra_dir.mkdir(parents=True, exist_ok=True)
    n = len(train_labels)
    train = extra.Split(np.full((n, 28, 28), 200, np.uint8), np.array(train_labels, np.uint8))
    for name, part in (("train", train), ("holdout", extra.Split.empty())):
        (extra_dir / extra.images_file(name)).write_bytes(idx.encode_idx(part.images))
        (extra_dir / extra.labels_file(name)).write_bytes(idx.encode_idx(part.labels))


def test_extra_data_changes_it_and_none_is_like_an_empty_inbox(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    params = parse_params({})
    alone = inputs_fingerprint(params, tiny_data_dir)
    assert alone["extra_sha256"] == extra.NO_EXTRA_SHA256
    _write_extra(tmp_path / "empty", [])
    assert inputs_fingerprint(params, tiny_data_dir, tmp_path / "empty") == alone
    _write_extra(tmp_path / "three", [3])
    _write_extra(tmp_path / "five", [5])
    three = inputs_fingerprint(params, tiny_data_dir, tmp_path / "three")
    five = inputs_fingerprint(params, tiny_data_dir, tmp_path / "five")
    assert len({alone["sha256"], three["sha256"], five["sha256"]}) == 3
    assert three["extra_sha256"] == extra.extra_sha256(tmp_path / "three") != five["extra_sha256"]


def _copy_of_package(tmp_path: Path) -> Path:
    """A copy of the package's sources under tmp_path (the source root to hash)."""
    shutil.copytree(SOURCE_ROOT / "mnist_pipeline", tmp_path / "mnist_pipeline")
    return tmp_path


def _edit(path: Path) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")


def test_code_hash_is_the_training_closure(tmp_path: Path) -> None:
    """Editing a module training imports changes the hash; editing serving, the registry or
    the CLI does not (dvc.yaml's train deps are the same closure: test_dvc.py)."""
    root = _copy_of_package(tmp_path)
    before = code_sha256(root)
    assert before == code_sha256()  # the copy hashes like the package itself
    for untouched in ("serving/http_api.py", "registry/api.py", "cli/app.py", "export/parity.py"):
        _edit(root / "mnist_pipeline" / untouched)
        assert code_sha256(root) == before, untouched
    _edit(root / "mnist_pipeline" / "training" / "loop.py")
    after_loop = code_sha256(root)
    assert after_loop != before
    _edit(root / "mnist_pipeline" / "core" / "params.py")  # imported through others
    assert code_sha256(root) != after_loop


def test_closure_follows_imports_through_other_modules(tmp_path: Path) -> None:
    package = tmp_path / "mnist_pipeline"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from mnist_pipeline.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from . import c\n")  # lazy, relative
    (package / "sub" / "c.py").write_text("import os\n")
    (package / "unused.py").write_text("x = 1\n")
    assert import_closure("mnist_pipeline.a", tmp_path) == [
        "mnist_pipeline/__init__.py",
        "mnist_pipeline/a.py",
        "mnist_pipeline/sub/__init__.py",
        "mnist_pipeline/sub/b.py",
        "mnist_pipeline/sub/c.py",
    ]


def test_the_fingerprint_hashes_the_train_stage_module() -> None:
    from mnist_pipeline.pipeline.stages import STAGES

    assert STAGES["train"].entry.partition(":")[0] == TRAIN_MODULE
