"""The robustness set's cache: the same set as rendering it, reused, never trusted when bad."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.core.imports import SOURCE_ROOT, import_closure, sources_sha256
from mnist_pipeline.data import preprocess
from mnist_pipeline.evaluation import distortions, robustness, robustness_cache
from mnist_pipeline.evaluation.robustness import TRANSFORMS, robustness_set
from tests.test_robustness import ring


def tiny() -> tuple[np.ndarray, np.ndarray]:
    images = np.stack([ring(5 + i % 5) for i in range(6)])
    return images, np.arange(6) % 10


def same(a: dict, b: dict) -> bool:
    return list(a) == list(b) == list(TRANSFORMS) and all(
        np.array_equal(a[n][0], b[n][0]) and np.array_equal(a[n][1], b[n][1]) for n in a
    )


def no_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> None:
        raise AssertionError("rendered although a valid cache file was there")

    monkeypatch.setattr(robustness_cache, "robustness_set", refuse)


def test_cached_set_is_the_rendered_set_and_is_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, labels = tiny()
    first = robustness_cache.cached_robustness_set(images, labels, 4, tmp_path)
    assert same(first, robustness_set(images, labels, 4))
    (stored,) = tmp_path.iterdir()  # one file, no temp files left
    assert stored.name == robustness_cache.cache_key(images, labels, 4, 0) + ".npz"
    no_rendering(monkeypatch)
    assert same(robustness_cache.cached_robustness_set(images, labels, 4, tmp_path), first)


def test_a_set_asking_for_more_digits_than_there_are_is_read_back_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, labels = tiny()  # six digits, ten asked for: the set holds six of each
    first = robustness_cache.cached_robustness_set(images, labels, 10, tmp_path)
    assert {len(wanted) for _, wanted in first.values()} == {6}
    no_rendering(monkeypatch)
    assert same(robustness_cache.cached_robustness_set(images, labels, 10, tmp_path), first)


def test_key_changes_with_every_input() -> None:
    images, labels = tiny()
    key = robustness_cache.cache_key(images, labels, 4, 0)
    other_images = images.copy()
    other_images[0, 0, 0] = 1
    others = {
        robustness_cache.cache_key(other_images, labels, 4, 0),
        robustness_cache.cache_key(images, (labels + 1) % 10, 4, 0),
        robustness_cache.cache_key(images, labels, 5, 0),
        robustness_cache.cache_key(images, labels, 4, 1),
    }
    assert key not in others and len(others) == 4


def test_code_version_is_part_of_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = tiny()
    key = robustness_cache.cache_key(images, labels, 4, 0)
    monkeypatch.setattr(robustness_cache, "FORMAT", b"robustness-cache 2")
    assert robustness_cache.cache_key(images, labels, 4, 0) != key
    monkeypatch.undo()
    # the renderer's sources as this process loaded them, not as they are on disk later
    monkeypatch.setattr(robustness, "LOADED_SOURCES_SHA256", "0" * 64)
    assert robustness_cache.cache_key(images, labels, 4, 0) != key
    monkeypatch.undo()
    # the libraries preprocessing renders with: scipy labels the strokes' components
    import scipy

    monkeypatch.setattr(scipy, "__version__", "0.0.1")
    assert robustness_cache.cache_key(images, labels, 4, 0) != key
    monkeypatch.undo()
    # and those it draws and encodes with: Pillow, its JPEG library, numpy
    import PIL
    from PIL import features

    jpeg = features.version("jpg")
    for module, name, value in [
        (PIL, "__version__", "0.0.1"),
        (np, "__version__", "0.0.1"),
        (features, "version", lambda lib: "0.0" if lib == "jpg" else jpeg),
    ]:
        monkeypatch.setattr(module, name, value)
        assert robustness_cache.cache_key(images, labels, 4, 0) != key, name
        monkeypatch.undo()


def test_the_key_covers_what_the_renderer_imports() -> None:
    sources = import_closure(robustness.__name__)
    for module in (robustness, distortions, preprocess):
        assert Path(str(module.__file__)).relative_to(SOURCE_ROOT).as_posix() in sources
    assert "mnist_pipeline/core/contract.py" in sources  # imported by preprocessing, not by us
    assert sources_sha256(sources) == robustness.LOADED_SOURCES_SHA256  # unchanged since loaded


def rewritten(path: Path, change) -> None:
    """Rewrite the cache file with `change` applied to its arrays (by name), the checksum kept."""
    with np.load(path) as stored:
        arrays = dict(stored)
    change(arrays)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def damage_digits(path: Path) -> None:
    """One pixel changed."""

    def change(arrays: dict) -> None:
        arrays["paper.digits"] = arrays["paper.digits"].copy()
        arrays["paper.digits"][0, 0, 0] += 0.5

    rewritten(path, change)


def damage_labels(path: Path) -> None:
    """The last transformation's labels changed."""
    name = f"{TRANSFORMS[-1]}.labels"
    rewritten(path, lambda arrays: arrays.update({name: (arrays[name] + 1) % 10}))


def replace_key(path: Path) -> None:
    """As if made for other inputs (a stale or misplaced file)."""
    rewritten(path, lambda arrays: arrays.update(key=np.array("0" * 64)))


@pytest.mark.parametrize(
    "spoil",
    [
        lambda p: p.write_bytes(b"not a zip file"),
        lambda p: p.write_bytes(p.read_bytes()[:1000]),  # truncated
        damage_digits,
        damage_labels,
        replace_key,
    ],
    ids=["garbage", "truncated", "damaged", "relabelled", "stale"],
)
def test_a_bad_cache_file_is_rendered_again_and_replaced(tmp_path: Path, spoil) -> None:
    images, labels = tiny()
    rendered = robustness_cache.cached_robustness_set(images, labels, 4, tmp_path)
    (path,) = tmp_path.iterdir()
    key = path.stem
    spoil(path)
    assert robustness_cache.read(path, key, 4) is None
    assert same(robustness_cache.cached_robustness_set(images, labels, 4, tmp_path), rendered)
    assert robustness_cache.read(path, key, 4) is not None  # replaced by a good one


def test_an_unwritable_cache_only_warns(tmp_path: Path, capsys) -> None:
    images, labels = tiny()
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    sets = robustness_cache.cached_robustness_set(images, labels, 4, blocker / "robustness")
    assert same(sets, robustness_set(images, labels, 4))
    assert "cannot cache the robustness set" in capsys.readouterr().err


def test_no_folder_no_cache(tmp_path: Path) -> None:
    images, labels = tiny()
    assert same(robustness_cache.cached_robustness_set(images, labels, 4, None),
                robustness_set(images, labels, 4))  # fmt: skip
