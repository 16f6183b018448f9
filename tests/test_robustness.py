"""The robustness set: test digits drawn like photos and scans, deterministic, preprocessable."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_pipeline.data.preprocess import ImageError, preprocess_bytes
from mnist_pipeline.evaluation import robustness
from mnist_pipeline.evaluation.robustness import (
    LOSSY,
    TRANSFORMS,
    draw,
    preprocessed,
    render,
    robustness_set,
)

CODE = robustness.LOADED_SOURCES_SHA256  # what this process loaded, handed to renderers


def ring(size: int = 8) -> np.ndarray:
    """A white ring on black, uint8 [28, 28] (a zero-like digit)."""
    rows, cols = np.indices((28, 28))
    radius = np.hypot(rows - 14, cols - 14)
    return ((radius > size - 2) & (radius < size + 1)).astype(np.uint8) * 255


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_each_rendering_is_a_dark_digit_on_light_paper_and_deterministic(transform: str) -> None:
    data = render(ring(), transform, np.random.default_rng(7))
    assert data == render(ring(), transform, np.random.default_rng(7))
    assert data != render(ring(), transform, np.random.default_rng(8))
    image = Image.open(io.BytesIO(data))
    assert image.format == ("JPEG" if transform in LOSSY else "PNG")
    grey = np.asarray(image.convert("L"))
    paper = np.median(grey)
    assert min(grey.shape) >= 56 and paper > 150 and grey.min() < paper - 50
    digit = preprocess_bytes(data, transform)  # what predict makes of it
    assert digit.shape == (28, 28) and digit.max() > 0.5
    # The set skips the lossless PNG round trip: the same digit, bit for bit.
    assert np.array_equal(preprocessed(ring(), transform, np.random.default_rng(7)), digit)


def ink_bbox(image: Image.Image, below: int = 60) -> tuple[int, int]:
    """(height, width) of the pixels darker than the paper by more than `below` levels."""
    grey = np.asarray(image, dtype=np.int16)
    rows, cols = np.nonzero(grey < np.median(grey) - below)
    return int(np.ptp(rows)) + 1, int(np.ptp(cols)) + 1


def test_squeezed_and_stretched_change_the_aspect_ratio() -> None:
    aspect = {}
    for t in ("paper", "squeezed", "stretched"):
        ratios = [np.divide(*ink_bbox(draw(ring(), t, np.random.default_rng(s)))) for s in range(5)]
        aspect[t] = float(np.mean(ratios))  # height / width; about 1 for a ring
    assert aspect["squeezed"] > 1.35 * aspect["paper"] and aspect["paper"] > 0.9
    assert aspect["stretched"] < aspect["paper"] / 1.3


def paper_levels(image: Image.Image) -> np.ndarray:
    """Grey levels of paper only: bands along three edges (the digit keeps 8 px from them)."""
    grey = np.asarray(image, dtype=np.float64)
    return np.concatenate([grey[:6].ravel(), grey[-6:].ravel(), grey[:, :6].ravel()])


def test_uneven_light_darkens_the_paper_unevenly_and_even_paper_stays_flat() -> None:
    even = paper_levels(draw(ring(), "paper", np.random.default_rng(3)))
    assert np.ptp(even) == 0
    for seed in range(4):
        uneven = paper_levels(draw(ring(), "uneven_light", np.random.default_rng(seed)))
        assert np.ptp(uneven) > 15, seed  # gradient, vignette and shadow: tens of grey levels


def roughness(image: Image.Image) -> float:
    """The median step between side-by-side pixels inside the stroke, per level of contrast."""
    grey = np.asarray(image, dtype=np.float64)
    core = grey < np.median(grey) - 20
    steps = np.abs(np.diff(grey, axis=1))[core[:, 1:] & core[:, :-1]]
    return float(np.median(steps)) / (np.median(grey) - grey.min())


def tilt(image: Image.Image) -> float:
    """Degrees between the ink's long axis and the vertical (its second moments)."""
    grey = np.asarray(image, dtype=np.float64)
    ink = np.clip(np.median(grey) - grey, 0, None)
    ink[ink < 30] = 0  # the paper's noise
    rows, cols = np.indices(grey.shape)
    mass = ink.sum()
    dy, dx = rows - (ink * rows).sum() / mass, cols - (ink * cols).sum() / mass
    moments = [(ink * a * b).sum() / mass for a, b in ((dy, dy), (dx, dx), (dy, dx))]
    return float(np.degrees(0.5 * np.arctan2(2 * moments[2], moments[0] - moments[1])))


def test_rotated_tilts_by_8_to_15_degrees_either_way_and_blur_softens_edges() -> None:
    bar = np.zeros((28, 28), np.uint8)
    bar[6:22, 13:15] = 255  # upright
    rng = np.random.default_rng
    tilts = [tilt(draw(bar, "rotated", rng(seed))) for seed in range(8)]
    assert all(7.5 <= abs(t) <= 15.5 for t in tilts) and min(tilts) < 0 < max(tilts), tilts
    assert abs(tilt(draw(bar, "paper", rng(0)))) < 1

    def sharpness(image: Image.Image) -> float:
        grey = np.asarray(image, dtype=np.float64)
        return np.abs(np.diff(grey, axis=1)).max() / (np.median(grey) - grey.min())

    for seed in range(4):  # the same layout (blur draws last), edges at most half as steep
        blurred = sharpness(draw(ring(), "blur", rng(seed)))
        assert blurred < 0.5 * sharpness(draw(ring(), "paper", rng(seed))), seed


def test_jpeg_is_saved_at_a_low_quality_and_perspective_warps_the_digit() -> None:
    rng = np.random.default_rng
    for seed in range(4):
        drawn = np.asarray(draw(ring(), "jpeg", rng(seed)), dtype=np.float64)
        saved = np.asarray(Image.open(io.BytesIO(render(ring(), "jpeg", rng(seed)))))
        assert np.abs(saved - drawn).mean() > 0.7, seed  # quality 10-30 (90: about 0.2)
        # the same draws as paper up to the warp, which moves the ink
        warped = np.asarray(draw(ring(), "perspective", rng(seed)), dtype=np.float64)
        flat = np.asarray(draw(ring(), "paper", rng(seed)), dtype=np.float64)
        assert np.abs(warped - flat).mean() > 5, seed


def test_pencil_is_light_and_grainy_and_a_marker_thicker_than_thick() -> None:
    rng = np.random.default_rng
    pencil = np.asarray(draw(ring(), "pencil", rng(2)), dtype=np.float64)
    pen = np.asarray(draw(ring(), "thin", rng(2)), dtype=np.float64)
    for grey, dark in ((pencil, False), (pen, True)):
        paper = np.median(grey)
        assert (paper - grey.min() > 120) == dark  # pencil: at most 110 levels below the paper
    core = pencil < np.median(pencil) - 20
    assert np.std(pencil[core]) > 10  # grain: the stroke is far from one grey
    for seed in range(4):  # grain, not edges: neighbours inside the stroke differ (the same
        grainy = roughness(draw(ring(), "pencil", rng(seed)))  # layout as the pen's draws)
        assert grainy > 4 * roughness(draw(ring(), "thin", rng(seed))), seed
    ink = {t: preprocessed(ring(), t, rng(1)).sum() for t in ("thick", "marker")}
    assert ink["marker"] > 1.15 * ink["thick"]


def test_ruled_draws_a_line_across_the_canvas() -> None:
    for seed in range(4):
        grey = np.asarray(draw(ring(), "ruled", np.random.default_rng(seed)), dtype=np.int16)
        darker = grey < np.median(grey) - 30
        assert darker.all(axis=1).any(), seed  # one row dark from edge to edge
        plain = np.asarray(draw(ring(), "paper", np.random.default_rng(seed)), dtype=np.int16)
        assert not (plain < np.median(plain) - 30).all(axis=1).any()


def test_strokes_get_thicker_and_thinner() -> None:
    ink = {
        t: preprocess_bytes(render(ring(), t, np.random.default_rng(1)), t).sum()
        for t in ("paper", "thick", "thin")
    }
    assert ink["thick"] > 1.2 * ink["paper"] > 1.2 * 1.1 * ink["thin"]


FOUND_ON_BLANK = ("noise", "uneven_light", "ruled", "stray")


def test_the_set_is_fixed_by_the_seed_and_a_refused_rendering_is_a_miss() -> None:
    images = np.stack([ring(6 + i % 4) for i in range(12)])
    labels = np.arange(12) % 10
    order = np.random.default_rng(1).permutation(12)[:8]
    refused = 4
    assert refused in order  # seed 1 samples it, so the miss is exercised
    images[refused] = 0  # nothing to draw: preprocessing refuses it
    first = robustness_set(images, labels, per_transform=8, seed=1)
    again = robustness_set(images, labels, per_transform=8, seed=1)
    assert list(first) == list(TRANSFORMS)
    for name, (digits, wanted) in first.items():
        assert digits.shape == (8, 28, 28) and wanted.shape == (8,)
        assert np.array_equal(digits, again[name][0]) and np.array_equal(wanted, again[name][1])
        assert list(wanted[order != refused]) == list(labels[order[order != refused]])
        # On blank paper, sensor noise, a shadow and clutter pass as ink (preprocess step 4).
        found = name in FOUND_ON_BLANK
        missed = wanted[order == refused]
        assert list(missed) == ([labels[refused]] if found else [-1]), name
        assert digits[order == refused].any() == found, name
    with pytest.raises(ValueError, match="unknown transformation"):
        render(ring(), "sepia", np.random.default_rng(0))
    other = robustness_set(images, labels, per_transform=8, seed=2)
    for k, name in enumerate(TRANSFORMS):  # another seed, other drawings; each its own draws
        assert not np.array_equal(first[name][0], other[name][0]), name
        rng, alone = np.random.default_rng([1, k]), np.zeros((8, 28, 28), np.float32)
        for j, i in enumerate(order):  # generator [seed, k], drawn in the set's order
            with contextlib.suppress(ImageError):  # the blank digit still uses its draws
                alone[j] = preprocessed(images[i], name, rng)
        assert np.array_equal(first[name][0], alone), name


def ring_set() -> tuple[np.ndarray, np.ndarray]:
    """Twelve rings of four sizes, labelled 0-9 and 0-1."""
    return np.stack([ring(6 + i % 4) for i in range(12)]), np.arange(12) % 10


def same_sets(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(
        np.array_equal(a[n][0], b[n][0]) and np.array_equal(a[n][1], b[n][1]) for n in a
    )


@pytest.fixture
def renderers(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The command line of every renderer process started, as they start."""
    started: list[list[str]] = []
    popen = subprocess.Popen

    def spy(command: list[str], **kwargs: object) -> subprocess.Popen:
        started.append(command)
        return popen(command, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(subprocess, "Popen", spy)
    return started


def test_renderer_processes_draw_exactly_what_one_process_draws(
    renderers: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    images, labels = ring_set()
    alone = robustness_set(images, labels, per_transform=6, seed=2, workers=1)
    assert renderers == []
    for workers in (2, 3):  # this process renders one share, `workers - 1` others the rest
        assert same_sets(robustness_set(images, labels, 6, seed=2, workers=workers), alone)
    assert len(renderers) == 1 + 2 and "warning" not in capsys.readouterr().err


def test_a_large_set_is_shared_with_one_process_per_core(
    renderers: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    images, labels = ring_set()
    alone = robustness_set(images, labels, per_transform=4, seed=3, workers=1)
    monkeypatch.setattr(robustness, "cpu_count", lambda: 3)
    monkeypatch.setattr(robustness, "PARALLEL_FROM", 4 * len(TRANSFORMS) + 1)
    assert same_sets(robustness_set(images, labels, per_transform=4, seed=3), alone)
    assert renderers == []  # below PARALLEL_FROM: this process alone
    monkeypatch.setattr(robustness, "PARALLEL_FROM", 4 * len(TRANSFORMS))
    assert same_sets(robustness_set(images, labels, per_transform=4, seed=3), alone)
    assert len(renderers) == 2  # three cores: this process and two renderers
    with pytest.raises(ValueError, match="workers must be 0"):
        robustness_set(images, labels, per_transform=4, workers=-1)


@pytest.mark.parametrize("executable", ["/bin/false", "/nonexistent/python", "hangs"])
def test_a_renderer_that_fails_hangs_or_cannot_start_is_drawn_here_with_a_warning(
    executable: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images, labels = ring_set()
    alone = robustness_set(images, labels, per_transform=6, seed=2, workers=1)
    if executable == "hangs":
        executable = str(tmp_path / "hangs")
        Path(executable).write_text("#!/bin/sh\nexec sleep 600\n")
        Path(executable).chmod(0o755)
        monkeypatch.setattr(robustness, "RENDERER_GRACE_S", 0.5)
    monkeypatch.setattr("sys.executable", executable)
    started = time.monotonic()
    assert same_sets(robustness_set(images, labels, 6, seed=2, workers=2), alone)
    assert time.monotonic() - started < 60  # a hung renderer is given up (and killed)
    warning = capsys.readouterr().err
    assert "warning:" in warning and "robustness renderer" in warning


@pytest.mark.parametrize(("own_s", "grace_s"), [(1.0, 10.0), (4.0, 20.0)])
def test_hung_renderers_share_one_deadline(
    own_s: float,
    grace_s: float,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Three renderers that never finish cost the grace period once, not once each: on a clock
    the test drives, every wait ends by the one deadline. The grace is RENDERER_GRACE_S (10 s
    here) or five times this process's own share, whichever is longer (4 s of its own: 20 s)."""
    clock = [0.0]

    class Hung:
        def wait(self, timeout: float | None = None) -> int:
            if timeout is None:
                return -9  # after kill()
            clock[0] += timeout
            raise subprocess.TimeoutExpired("renderer", timeout)

        def kill(self) -> None:
            pass

    def drawn_here(digits, labels, k, seed):
        clock[0] += own_s  # this process's own share (one transformation here)
        return digits.astype(np.float32), labels.astype(np.int64)

    monkeypatch.setattr(robustness.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(robustness, "_start", lambda *args: Hung())
    monkeypatch.setattr(robustness, "render_transform", drawn_here)
    monkeypatch.setattr(robustness, "RENDERER_GRACE_S", 10.0)
    images, labels = ring_set()
    got = robustness._render_with_others(images, labels, 0, [[0], [1], [2], [3]])
    assert set(got) == {0}  # only this process's share: the others are left to the caller
    assert clock[0] == own_s + grace_s  # its own share, then one grace period for all three
    assert capsys.readouterr().err.count("did not finish in time") == 3


def test_renderers_running_other_sources_than_the_caller_refuse_and_it_draws_their_share(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As if the checkout changed after this process loaded its code: the renderer processes
    # it starts import the sources on disk, whose digest is not the one it hands them.
    images, labels = ring_set()
    alone = robustness_set(images, labels, per_transform=6, seed=2, workers=1)
    monkeypatch.setattr(robustness, "LOADED_SOURCES_SHA256", "f" * 64)
    assert same_sets(robustness_set(images, labels, 6, seed=2, workers=3), alone)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warnings) == 2 and all("sources on disk differ" in w for w in warnings)


def test_a_renderer_whose_caller_is_gone_stops_without_writing(tmp_path: Path) -> None:
    images, labels = ring_set()
    source, output = tmp_path / "digits.npz", tmp_path / "out.npz"
    np.savez(source, digits=images, labels=labels)
    with pytest.raises(SystemExit, match="is gone"):  # its parent is not the one named
        robustness._render_group(str(source), str(output), "0", str(os.getppid() + 1), CODE, "1")
    assert not output.exists()
    with pytest.raises(SystemExit, match="sources on disk differ"):  # not its caller's code
        robustness._render_group(str(source), str(output), "0", str(os.getppid()), "0" * 64, "1")
    assert not output.exists()
    robustness._render_group(str(source), str(output), "0", str(os.getppid()), CODE, "1")
    with np.load(output) as stored:
        thick = robustness.render_transform(images, labels, 1, 0)[0]
        assert np.array_equal(stored["1.digits"], thick)
