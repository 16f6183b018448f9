"""MNIST-style preprocessing on synthetic arrays and files: polarity, crop, aspect, centring."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_pipeline.data import preprocess
from mnist_pipeline.data.preprocess import (
    ImageError,
    decode_grey,
    fit_box,
    load_grey,
    median,
    preprocess_bytes,
    preprocess_file,
    round_half_up,
    to_mnist,
)
from tests.example_helpers import png_header_only


def paper(h: int = 120, w: int = 100, ink: list[tuple[int, int, int, int]] | None = None):
    """White paper (1.0) with black rectangles (row0, row1, col0, col1) of ink (0.0)."""
    grey = np.ones((h, w), np.float32)
    for r0, r1, c0, c1 in ink or [(30, 90, 40, 52), (30, 42, 52, 70)]:  # a "7"-ish L shape
        grey[r0:r1, c0:c1] = 0.0
    return grey


def centre_of_mass(digit: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(digit.shape)
    return float((digit * rows).sum() / digit.sum()), float((digit * cols).sum() / digit.sum())


def bbox_at(digit: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the nonzero pixels, bottom and right exclusive."""
    rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def bbox(digit: np.ndarray) -> tuple[int, int]:
    top, left, bottom, right = bbox_at(digit)
    return bottom - top, right - left


def test_output_is_float32_28x28_in_unit_range() -> None:
    digit = to_mnist(paper())
    assert digit.shape == (28, 28) and digit.dtype == np.float32
    assert digit.min() >= 0.0 and math.isclose(float(digit.max()), 1.0, abs_tol=1e-6)
    assert digit[0].sum() == 0 and digit[:, 0].sum() == 0  # background is black


def test_dark_on_light_and_light_on_dark_give_the_same_digit() -> None:
    grey = paper()
    np.testing.assert_allclose(to_mnist(grey), to_mnist(1.0 - grey), atol=1e-6)


def test_grey_paper_and_grey_ink_are_stretched_to_full_contrast() -> None:
    grey = paper()
    photo = 0.75 * grey + 0.15  # paper 0.9, ink 0.15
    np.testing.assert_allclose(to_mnist(photo), to_mnist(grey), atol=1e-5)


@pytest.mark.parametrize(
    ("background", "stroke"),
    [(0.35, 0.05), (0.2, 0.0), (0.6, 0.95), (0.8, 1.0)],
    ids=["dim-paper", "dark-paper", "chalk-on-grey", "chalk-on-light-grey"],
)
def test_polarity_follows_the_ink_not_the_brightness_of_the_paper(
    background: float, stroke: float
) -> None:
    """An underexposed photo of white paper has a background below 0.5 and darker ink; white
    chalk on grey paper a background above 0.5 and lighter ink. Both read as the same digit."""
    grey = paper()
    photo = (background + (stroke - background) * (1 - grey)).astype(np.float32)
    np.testing.assert_allclose(to_mnist(photo), to_mnist(grey), atol=1e-5)


@pytest.mark.parametrize(
    ("background", "stroke", "spot", "value"),
    [
        (0.62, 0.35, (5, 5, 1, 1), 1.0),  # a hot pixel brighter than the paper is dark
        (0.7, 0.5, (100, 5, 6, 6), 1.0),  # a larger glint, light pencil
        (0.4, 0.75, (0, 0, 120, 3), 0.0),  # chalk on a board, a dark frame along one edge
    ],
    ids=["hot-pixel", "glint-light-pencil", "frame-beside-chalk"],
)
def test_a_spot_of_the_other_polarity_does_not_decide_it(
    background: float, stroke: float, spot: tuple[int, int, int, int], value: float
) -> None:
    """A few pixels of the other polarity (a glint, a hot pixel, a strip at the edge) do not
    turn the digit over: the background's polarity stands while its side has ink."""
    grey = paper()
    photo = (background + (stroke - background) * (1 - grey)).astype(np.float32)
    top, left, h, w = spot
    photo[top : top + h, left : left + w] = value
    clean = to_mnist(grey)
    assert np.corrcoef(to_mnist(photo).ravel(), clean.ravel())[0, 1] > 0.95


def test_crop_keeps_aspect_ratio_and_fits_20_pixels() -> None:
    tall = paper(300, 300, ink=[(50, 150, 200, 220)])  # 100 x 20 bar
    assert bbox(to_mnist(tall)) == (20, 4)
    wide = paper(300, 300, ink=[(10, 40, 20, 260)])  # 30 x 240 bar
    assert bbox(to_mnist(wide)) == (round_half_up(30 * 20 / 240), 20)


def test_position_in_the_input_does_not_matter() -> None:
    a = paper(200, 200, ink=[(10, 70, 10, 22), (10, 22, 22, 40)])
    b = paper(200, 200, ink=[(130, 190, 150, 162), (130, 142, 162, 180)])
    np.testing.assert_allclose(to_mnist(a), to_mnist(b), atol=1e-6)


def test_centre_of_mass_is_moved_to_14_14() -> None:
    digit = to_mnist(paper())  # the L shape's mass is far from its box centre
    cy, cx = centre_of_mass(digit)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    rows = np.flatnonzero(digit.any(axis=1))
    assert rows[0] != 4  # not merely box-centred
    # placed exactly as step 7 says: a 20 x 10 block has its centre at (9.5, 4.5), so its
    # corner goes to (round(4.5), round(9.5)) = (5, 10), halves rounded up
    placed = preprocess.centre_by_mass(np.ones((20, 10), np.float32))
    assert bbox_at(placed) == (5, 10, 25, 20)


def test_faint_paper_noise_does_not_grow_the_box() -> None:
    rng = np.random.default_rng(0)
    grey = np.minimum(
        paper(300, 300, ink=[(50, 150, 200, 220)]), 1 - rng.uniform(0, 0.1, (300, 300))
    )
    assert bbox(to_mnist(grey.astype(np.float32))) == (20, 4)


@pytest.mark.parametrize("sigma", [0.06, 0.1])
def test_sensor_noise_does_not_grow_the_box(sigma: float) -> None:
    """Gaussian noise on paper and ink (a phone photo): with the fixed 0.2 threshold, ~0.1-7% of
    the paper would count as ink and the box would span the canvas; the threshold follows the
    noise measured on the border, so the digit comes out as on clean paper."""
    rng = np.random.default_rng(1)
    clean = paper(300, 300, ink=[(50, 150, 200, 220), (50, 62, 160, 200)])
    photo = 0.15 + 0.7 * clean + rng.normal(0, sigma, clean.shape)
    digit = to_mnist(photo.clip(0, 1).astype(np.float32))
    assert bbox(digit) == bbox(to_mnist(clean))
    assert float(np.abs(digit - to_mnist(clean)).mean()) < 0.05


def test_the_threshold_follows_the_noise_on_the_border_up_to_its_cap() -> None:
    """Step 4 on its own (before step 5 drops pieces clear of the digit): paper at 0.9 and one
    black pixel, so an ink value d is (1 - grey - 0.1) / 0.9."""
    rng = np.random.default_rng(3)
    noisy = (0.9 + rng.normal(0, 0.09, (200, 200))).clip(0, 1)  # d's noise: sigma 0.1
    noisy[100, 100] = 0.0
    kept = preprocess.ink_map(noisy.astype(np.float32))
    # 6 median absolute deviations: ~0.4, so about none of the paper passes (0.2: 2.3% would)
    assert np.count_nonzero(kept) <= 5
    # Noise measured on the border only: a dark block filling the middle is not noise, so a
    # faint stroke (d 0.3) on clean paper stays ink under the fixed threshold 0.2.
    clean = np.ones((200, 200))
    clean[30:170, 30:170] = 0.0
    clean[10:20, 60:140] = 0.7
    assert preprocess.ink_map(clean.astype(np.float32))[10:20, 60:140].min() > 0.25
    # Very noisy paper asks 6 deviations of ~0.6; the cap, 0.5, keeps ink at d 0.6.
    grainy = (0.9 + rng.normal(0, 0.135, (200, 200))).clip(0, 1)
    grainy[90:110, 50:150] = 1 - (0.6 * 0.9 + 0.1)  # d 0.6, noise-free
    grainy[100, 20] = 0.0
    assert preprocess.ink_map(grainy.astype(np.float32))[90:110, 50:150].min() > 0.55


def test_clean_images_keep_the_fixed_threshold() -> None:
    """Noise-free paper measures no noise: faint ink just above 0.2 stays ink."""
    grey = paper(100, 100, ink=[(20, 80, 45, 55)])
    grey[20:80, 30:45] = 1 - 0.25  # a faint stroke beside the bar: ink 0.25 > 0.2
    assert bbox(to_mnist(grey))[1] > bbox(to_mnist(paper(100, 100, ink=[(20, 80, 45, 55)])))[1]


def test_marks_clear_of_the_digit_are_ignored() -> None:
    """Dust, a pair of touching pixels, a neighbour's stroke and a line below the digit: none
    shares a row and a column with the digit's box, so none moves or shrinks it."""
    bar = paper(200, 200, ink=[(60, 140, 90, 100)])
    marks = bar.copy()
    marks[5, 5] = marks[190, 180] = 0.0  # single dust pixels far from the digit
    marks[5, 150] = marks[6, 151] = 0.0  # two diagonal neighbours
    marks[70:130, 110:116] = 0.0  # a stroke beside the digit, 10 px away
    marks[150:152, :] = 0.0  # a ruled line across the page, under the digit
    np.testing.assert_array_equal(to_mnist(marks), to_mnist(bar))


def test_separate_strokes_that_overlap_the_digit_box_are_kept() -> None:
    """A digit drawn in strokes that do not touch (a 4, a 5's flag, a broken pencil line): every
    piece whose box overlaps the heaviest piece's box is kept, even where it reaches beyond it;
    a piece that overlaps only such a piece is dropped."""
    main = [(60, 140, 90, 100), (130, 140, 100, 160)]  # an L: rows 60-139, columns 90-159
    inside = (60, 70, 110, 150)  # within the L's box
    sticking_out = (64, 68, 152, 180)  # overlaps the L's box, reaches column 179
    beside_that = (100, 110, 170, 176)  # overlaps the box the L and sticking_out span, not the L's
    above = (20, 40, 110, 120)  # shares columns with the L's box, no row
    digit = to_mnist(paper(200, 200, ink=[*main, inside, sticking_out, beside_that, above]))
    np.testing.assert_array_equal(
        digit, to_mnist(paper(200, 200, ink=[*main, inside, sticking_out]))
    )
    assert bbox(digit) != bbox(to_mnist(paper(200, 200, ink=main)))


def test_the_main_piece_is_the_one_with_most_ink_and_pieces_join_diagonally() -> None:
    ink = np.zeros((60, 60), np.float32)
    ink[2:12, 2:12] = 0.3  # 100 faint pixels: mass 30
    ink[40:45, 40:48] = 1.0  # 40 dark ones: mass 40, the digit
    kept = preprocess.keep_digit(ink)
    assert bbox_at(kept) == (40, 40, 45, 48)  # by ink, not by pixel count
    for step in range(10):  # a stroke of pixels touching only at corners, out of the box
        ink[45 + step, 48 + step] = 1.0
    assert bbox_at(preprocess.keep_digit(ink)) == (40, 40, 55, 58)  # one 8-connected piece
    corner = np.zeros((60, 60), np.float32)
    corner[40:45, 40:42] = corner[44, 40:48] = 1.0  # an L: its box is rows 40-44, columns 40-47
    corner[30:41, 47] = 0.5  # apart from it, sharing only the box's first row and last column
    assert bbox_at(preprocess.keep_digit(corner)) == (30, 40, 45, 48)  # kept: the edges count
    tie = np.zeros((30, 30), np.float32)
    tie[2:6, 20:24] = tie[20:24, 2:6] = 1.0  # equal mass: the first in row-major order wins
    assert bbox_at(preprocess.keep_digit(tie)) == (2, 20, 6, 24)


def test_the_heaviest_piece_decides_where_the_digit_is() -> None:
    """A faint long line outweighed by the digit is dropped; the digit is not."""
    grey = paper(200, 200, ink=[(60, 140, 90, 110)])
    grey[180, 10:190] = 0.6  # a thin, light line: ink 0.4, 180 px (mass 72 < the bar's 1600)
    np.testing.assert_array_equal(
        to_mnist(grey), to_mnist(paper(200, 200, ink=[(60, 140, 90, 110)]))
    )


@pytest.mark.parametrize(
    "grey",
    [
        np.ones((50, 40)),
        np.zeros((50, 40)),
        np.full((50, 40), 0.5),
        np.ones((1, 1)),
        np.eye(1, 9, 4),
    ],
    ids=["white", "black", "grey", "one-pixel", "one-speck"],
)
def test_blank_images_are_refused(grey: np.ndarray) -> None:
    with pytest.raises(ImageError, match="blank"):
        to_mnist(grey)


def test_low_contrast_smudge_is_blank() -> None:
    grey = np.ones((50, 50), np.float32)
    grey[20:30, 20:30] = 0.95
    with pytest.raises(ImageError, match="no ink"):
        to_mnist(grey)


def _documented_resize(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Step 6 of the module docstring, transcribed literally (the spec for other runtimes)."""

    def axis(data: np.ndarray, m: int) -> np.ndarray:  # resample the last axis to length m
        n = data.shape[-1]
        scale = n / m
        fs = max(scale, 1.0)
        out = np.empty(data.shape[:-1] + (m,), np.float32)
        for i in range(m):
            centre = (i + 0.5) * scale
            lo = max(int(centre - fs + 0.5), 0)
            hi = min(int(centre + fs + 0.5), n)
            xs = np.arange(lo, hi)
            w = np.maximum(0.0, 1.0 - np.abs(xs - centre + 0.5) / fs)
            out[..., i] = (data[..., lo:hi].astype(np.float64) * w).sum(-1) / w.sum()
        return out

    columns_done = axis(image, out_w)
    return axis(columns_done.T, out_h).T


@pytest.mark.parametrize("shape", [(100, 37), (13, 90), (7, 5), (20, 20), (240, 239), (1, 9)])
def test_resize_follows_the_documented_filter(shape: tuple[int, int]) -> None:
    crop = np.random.default_rng(sum(shape)).uniform(0, 1, shape).astype(np.float32)
    got = fit_box(crop)
    h, w = shape
    s = 20 / max(h, w)
    expected_shape = (max(1, round_half_up(h * s)), max(1, round_half_up(w * s)))
    assert got.shape == expected_shape and max(got.shape) == 20
    np.testing.assert_allclose(got, _documented_resize(crop, *expected_shape), atol=2e-6)


def test_round_half_up_is_not_bankers_rounding() -> None:
    assert [round_half_up(x) for x in (0.5, 1.5, 2.5, -0.5)] == [1, 2, 3, 0]


# ---- files


def _save(path: Path, grey: np.ndarray, mode: str = "L", **kwargs) -> Path:
    image = Image.fromarray((grey * 255).round().astype(np.uint8))
    image.convert(mode).save(path, **kwargs)
    return path


def test_rgb_jpeg_and_grey_png_agree(tmp_path: Path) -> None:
    grey = paper()
    png = preprocess_file(_save(tmp_path / "a.png", grey))
    jpg = preprocess_file(_save(tmp_path / "a.jpg", grey, "RGB", quality=95))
    np.testing.assert_allclose(png, to_mnist(grey), atol=1e-6)
    assert np.abs(png - jpg).max() < 0.15


def test_rgb_is_converted_with_luma_weights(tmp_path: Path) -> None:
    pixels = np.zeros((2, 2, 3), np.uint8)
    pixels[0, 0] = (255, 0, 0)
    pixels[0, 1] = (0, 255, 0)
    pixels[1, 0] = (0, 0, 255)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    grey = load_grey(tmp_path / "rgb.png")
    np.testing.assert_allclose(grey, [[0.299, 0.587], [0.114, 0.0]], atol=1e-6)


def test_transparent_background_counts_as_white_paper(tmp_path: Path) -> None:
    grey = paper()
    rgba = np.zeros(grey.shape + (4,), np.uint8)  # transparent black everywhere...
    rgba[..., 3] = np.where(grey < 0.5, 255, 0)  # ...except opaque black ink
    Image.fromarray(rgba).save(tmp_path / "canvas.png")
    np.testing.assert_allclose(preprocess_file(tmp_path / "canvas.png"), to_mnist(grey), atol=1e-6)


def test_light_ink_on_a_transparent_sheet_is_read_over_black(tmp_path: Path) -> None:
    grey = paper()
    ink = np.where(grey < 0.5, 255, 0).astype(np.uint8)  # anti-aliasing aside: alpha is the ink
    white = np.stack([np.full_like(ink, 255)] * 3 + [ink], -1)  # white strokes, clear elsewhere
    Image.fromarray(white).save(tmp_path / "white.png")
    np.testing.assert_allclose(preprocess_file(tmp_path / "white.png"), to_mnist(grey), atol=1e-6)
    # A visible sheet (white paper, black ink) with transparent margins keeps white as paper.
    sheet = np.stack([np.round(grey * 255).astype(np.uint8)] * 3 + [np.full_like(ink, 255)], -1)
    framed = np.pad(sheet, ((15, 15), (15, 15), (0, 0)))  # clear black margins all round
    Image.fromarray(framed).save(tmp_path / "framed.png")
    np.testing.assert_allclose(
        preprocess_file(tmp_path / "framed.png"),
        to_mnist(np.pad(grey, 15, constant_values=1)),
        atol=1e-6,
    )
    blank = np.zeros_like(white)  # nothing drawn: still blank, on either paper
    Image.fromarray(blank).save(tmp_path / "clear.png")
    with pytest.raises(ImageError, match="blank"):
        preprocess_file(tmp_path / "clear.png")


def test_sixteen_bit_grey_png(tmp_path: Path) -> None:
    grey = paper()
    Image.fromarray((grey * 65535).astype(np.uint16)).save(tmp_path / "deep.png")
    np.testing.assert_allclose(load_grey(tmp_path / "deep.png"), grey, atol=1e-6)


def test_thirty_two_bit_float_tiff_is_read_as_stored(tmp_path: Path) -> None:
    """Scientific tools save float images in [0, 1]; Pillow's RGB conversion would clip them
    to black and the image would be called blank."""
    grey = 0.15 + 0.7 * paper()  # grey paper and ink, as a camera's float output
    Image.fromarray(grey.astype(np.float32), mode="F").save(tmp_path / "float.tiff")
    np.testing.assert_array_equal(load_grey(tmp_path / "float.tiff"), grey.astype(np.float32))
    np.testing.assert_allclose(
        preprocess_file(tmp_path / "float.tiff"), to_mnist(paper()), atol=1e-5
    )


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (
            paper() * 255,
            r"32-bit floating-point greyscale pixels must lie in \[0, 1\]; "
            "this image holds 0 to 255 ",
        ),
        (np.where(paper() > 0, np.nan, 0), "32-bit floating-point .* NaN or infinity"),
        (
            (paper() * 100_000).astype(np.int32),
            r"32-bit integer greyscale pixels must lie in \[0, 65535\]; "
            "this image holds 0 to 100000 ",
        ),
        ((paper() - 1).astype(np.int32), r"32-bit integer .* holds -1 to 0"),
        (paper() + 1e-7, r"32-bit floating-point .* to 1\.00000012 "),
        (
            np.full((20, 20), np.nan),
            r"32-bit floating-point .* holds no number and NaN or infinity",
        ),
    ],
    ids=["float-0-255", "float-nan", "int-above-16-bit", "int-negative", "just-over", "all-nan"],
)
def test_thirty_two_bit_pixels_outside_the_contract_are_refused_by_name(
    tmp_path: Path, pixels: np.ndarray, message: str
) -> None:
    mode = "F" if pixels.dtype.kind == "f" else "I"
    Image.fromarray(pixels.astype(np.float32 if mode == "F" else np.int32), mode=mode).save(
        tmp_path / "deep.tiff"
    )
    with pytest.raises(ImageError, match=f"deep.tiff: {message}"):
        preprocess_file(tmp_path / "deep.tiff")


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # ink in the top-left corner of a 40x60 (h x w) sheet: no rotation or flip maps it to itself
    stored = paper(40, 60, ink=[(4, 10, 6, 30), (10, 30, 6, 12)])
    image = Image.fromarray((stored * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    image.save(tmp_path / "phone.jpg", exif=exif)
    upright = load_grey(tmp_path / "phone.jpg")
    assert upright.shape == (60, 40)
    dark = upright < 0.5  # JPEG blurs the edges: compare where the ink is
    assert np.mean(dark == (np.rot90(stored, k=-1) < 0.5)) > 0.98
    # An uncompressed TIFF read from its file name: Pillow itself once skipped the tag there,
    # so `predict FILE` saw it sideways while an upload of the same bytes was upright.
    # Displayed: 5 transposed, 6 turned clockwise, 8 turned anticlockwise.
    shown = {5: stored.T, 6: np.rot90(stored, k=-1), 8: np.rot90(stored, k=1)}
    for orientation, expected in shown.items():
        exif[0x0112] = orientation
        image.save(tmp_path / "scan.tif", exif=exif)  # no compression, one strip
        from_file = load_grey(tmp_path / "scan.tif")
        assert np.array_equal(from_file, expected), orientation
        data = (tmp_path / "scan.tif").read_bytes()
        assert np.array_equal(from_file, decode_grey(data, "scan.tif")), orientation


def test_bad_files_get_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not an image")
    good = _save(tmp_path / "good.png", paper()).read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "bomb.png").write_bytes(png_header_only(8000, 8000))
    # Past twice Pillow's own limit Image.open refuses by itself: the same message, not Pillow's.
    (tmp_path / "huge.png").write_bytes(png_header_only(100_000, 100_000))
    (tmp_path / "folder.png").mkdir()
    _save(tmp_path / "white.png", np.ones((30, 30)))
    cases = {
        "missing.png": "no such file",
        "notes.png": "not a recognised image",
        "cut.png": "cannot read or decode",
        "bomb.png": "64,000,000 pixels, more than the limit",
        "huge.png": r": 10,000,000,000 pixels, more than the limit of 50,000,000 \(possible",
        "folder.png": "not a file",
        "white.png": "blank image",
    }
    for name, message in cases.items():
        with pytest.raises(ImageError, match=message) as info:
            preprocess_file(tmp_path / name)
        assert name in str(info.value)
    # A limit set above Pillow's own (178,956,970 pixels): the limit that refused it is named.
    with pytest.raises(ImageError, match=r"10,000,000,000 pixels, more than the limit of 178,9"):
        preprocess_bytes((tmp_path / "huge.png").read_bytes(), "huge.png", 20_000_000_000)


@pytest.mark.parametrize("suffix", [".gif", ".bmp", ".webp", ".pgm", ".tiff"])
def test_the_lossless_formats_read_give_what_png_gives(tmp_path: Path, suffix: str) -> None:
    grey = paper()
    png = preprocess_file(_save(tmp_path / "a.png", grey))
    assert np.array_equal(preprocess_file(_save(tmp_path / f"a{suffix}", grey, lossless=True)), png)


def test_formats_outside_the_list_are_not_opened(tmp_path: Path) -> None:
    """EPS would go to Ghostscript (a subprocess); ICO and TGA are simply not on the list."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n0 setgray 4 4 20 20 rectfill\n"
    with pytest.raises(ImageError, match=r"^x\.eps: not a recognised image file \(PNG, JPEG, "):
        preprocess_bytes(eps, "x.eps")
    for fmt in ("ICO", "TGA"):
        out = io.BytesIO()
        Image.fromarray((paper(64, 64) * 255).astype(np.uint8)).save(out, format=fmt)
        with pytest.raises(ImageError, match="not a recognised image file"):
            preprocess_bytes(out.getvalue(), f"x.{fmt.lower()}")


def test_an_array_with_nan_or_infinity_is_refused() -> None:
    grey = paper()
    grey[0, 0] = np.inf
    with pytest.raises(ImageError, match="NaN or infinity"):
        to_mnist(grey)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 107, 108, 1001])
def test_median_is_numpys_to_the_bit(size: int) -> None:
    """The border's median (steps 3-4) is np.median's value, bit for bit, for odd and even
    sizes, ties, float32 and float64: preprocessing stays the same function."""
    rng = np.random.default_rng(size)
    for dtype in (np.float32, np.float64):
        for _ in range(50):
            values = rng.random(size).astype(dtype)
            values[::3] = values[0]  # ties
            assert median(values) == float(np.median(values)), (size, dtype)
