"""The inputs fingerprint: same inputs, same hash; any input that shapes the weights changes it."""

from __future__ import annotations

from pathlib import Path

from mnist_pipeline.fingerprint import code_sha256, inputs_fingerprint
from mnist_pipeline.manifest import dataset_sha256
from mnist_pipeline.params import parse_params
from tests.synthetic import make_dataset, write_data_dir


def test_same_inputs_same_fingerprint(tiny_data_dir: Path) -> None:
    first = inputs_fingerprint(parse_params({}), tiny_data_dir)
    assert first == inputs_fingerprint(parse_params({}), tiny_data_dir)
    assert first["dataset_sha256"] == dataset_sha256(tiny_data_dir)
    assert first["code_sha256"] == code_sha256()
    assert set(first["params"]) == {"model", "train"}
    assert len(first["sha256"]) == 64


def test_params_that_shape_the_weights_change_it(tiny_data_dir: Path) -> None:
    base = inputs_fingerprint(parse_params({}), tiny_data_dir)["sha256"]
    for changed in ({"train": {"epochs": 3}}, {"train": {"seed": 2}}):
        assert inputs_fingerprint(parse_params(changed), tiny_data_dir)["sha256"] != base
    # The gate, the export and the registry do not change what training learns.
    same = {"evaluate": {"min_accuracy": 0.5}, "export": {"opset": 17}, "registry": {"root": "x"}}
    assert inputs_fingerprint(parse_params(same), tiny_data_dir)["sha256"] == base


def test_other_data_changes_it(tiny_data_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_data_dir(other, make_dataset(seed=7))
    params = parse_params({})
    assert inputs_fingerprint(params, other) != inputs_fingerprint(params, tiny_data_dir)


def test_code_hash_sees_every_source_file(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub" / "b.py").write_text("y = 2\n")
    (package / "notes.txt").write_text("not code")
    before = code_sha256(package)
    (package / "notes.txt").write_text("edited")
    assert code_sha256(package) == before
    (package / "sub" / "b.py").write_text("y = 3\n")
    assert code_sha256(package) != before
