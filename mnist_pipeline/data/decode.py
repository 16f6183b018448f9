"""Steps 1-2 of the preprocessing contract (data/preprocess.py, whose docstring has every step):
decode an image file or upload safely and turn it into greyscale in [0, 1] (pure numpy +
Pillow; no torch, no model).
"""

from __future__ import annotations

import io
import re
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_pipeline.core.errors import PipelineError

MAX_PIXELS = 50_000_000
MIN_CONTRAST = 0.1  # also step 4's: less than this between ink and paper is no ink
LUMA = (0.299, 0.587, 0.114)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# The file formats opened (Pillow's names; "PPM" reads PBM, PGM and PPM): raster formats decoded
# in process. Never every plugin: Pillow hands EPS and PostScript to Ghostscript, a subprocess
# that an upload must not reach.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")


class ImageError(PipelineError):
    """An input image could not be used (missing, undecodable, too large, blank)."""


class _HugeImage(ImageError):
    """Pillow refused to open an image whose header claims `pixels` pixels, more than twice its
    own limit (Image.MAX_IMAGE_PIXELS): far over this contract's limits too."""

    def __init__(self, pixels: int) -> None:
        super().__init__(f"{pixels:,} pixels")
        self.pixels = pixels


def _too_many(
    name: str, width_height: str, pixels: int, limit: int, setting: str | None = None
) -> ImageError:
    why = setting or "possible decompression bomb"
    return ImageError(
        f"{name}: {width_height}{pixels:,} pixels, more than the limit of {limit:,} ({why})"
    )


def _check_range(values: np.ndarray, top: float, kind: str) -> None:
    """Step 2: refuse pixel values this contract does not read (rather than call them blank)."""
    finite = values[np.isfinite(values)]
    if finite.size == values.size and float(values.min()) >= 0 and float(values.max()) <= top:
        return
    held = f"{float(finite.min()):.9g} to {float(finite.max()):.9g}" if finite.size else "no number"
    raise ImageError(
        f"{kind} greyscale pixels must lie in [0, {top:g}]; this image holds {held}"
        f"{'' if finite.size == values.size else ' and NaN or infinity'}"
        " (save it as an 8- or 16-bit image)"
    )


def _to_grey(image: Image.Image) -> np.ndarray:
    """Step 2: any decoded image -> float32 greyscale in [0, 1] (alpha: over white, or over
    black when nothing shows on white)."""
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        _check_range(values, 1.0, "32-bit floating-point")
        return values.copy()
    if image.mode in ("I;16", "I;16L", "I;16B", "I"):
        values = np.asarray(image, dtype=np.float64)
        _check_range(values, 65535.0, "32-bit integer")
        return (values / 65535.0).astype(np.float32)
    if image.mode == "L":
        return np.asarray(image, dtype=np.float32) / np.float32(255)
    has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    pixels = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    grey = np.zeros(pixels.shape[:2], dtype=np.float32)
    for channel, weight in enumerate(LUMA):
        grey += np.float32(weight) * pixels[..., channel].astype(np.float32)
    if has_alpha:
        alpha = pixels[..., 3].astype(np.float32) / np.float32(255)
        on_white = ((grey * alpha + np.float32(255) * (1 - alpha)) / np.float32(255)).clip(0, 1)
        if float(on_white.max()) - float(on_white.min()) >= MIN_CONTRAST:
            return on_white
        grey = grey * alpha  # light ink on a transparent sheet: over black
    return (grey / np.float32(255)).clip(0, 1)


def load_grey(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Steps 1-2: decode `path` safely into a float32 greyscale array (0 black, 1 white)."""
    try:  # a name too long, a folder that cannot be searched: this file's error, not the run's
        # (os.stat, not Path.exists: from Python 3.13 that hides every OSError as "absent")
        if not stat.S_ISREG(path.stat().st_mode):
            raise ImageError(f"{path}: not a file")
        # a file object, as for uploads: from a file name, Pillow reads an uncompressed TIFF
        source = path.open("rb")  # without applying its EXIF orientation
    except (FileNotFoundError, NotADirectoryError):
        raise ImageError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    with source:
        return _decode(source, str(path), max_pixels)


def decode_grey(
    data: bytes, name: str, max_pixels: int = MAX_PIXELS, setting: str | None = None
) -> np.ndarray:
    """Steps 1-2 for an image held in memory (an upload); errors start with `name`, and one
    over `max_pixels` names the `setting` that chose it (e.g. serve.max_pixels)."""
    return _decode(io.BytesIO(data), name, max_pixels, setting)


def header_pixels(data: bytes, name: str) -> int:
    """Width x height of an image held in memory, from its header (nothing decoded)."""
    try:
        with _opened(io.BytesIO(data), name) as image:
            width, height = image.size
    except _HugeImage as exc:
        return exc.pixels
    return width * height


@contextmanager
def _opened(source: BinaryIO, name: str) -> Iterator[Image.Image]:
    """The image at `source`, opened lazily; any failure, then or while it is used, is one
    ImageError starting with `name`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source, formats=FORMATS)
        with image:
            yield image
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # raised by open(), from the header alone
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        if claimed is None:  # another Pillow's wording
            raise ImageError(f"{name}: {exc}") from None
        raise _HugeImage(int(claimed[1])) from None
    except UnidentifiedImageError:
        known = ", ".join(FORMATS).replace("PPM", "PBM/PGM/PPM")
        raise ImageError(f"{name}: not a recognised image file ({known})") from None
    except Exception as exc:  # Pillow's decoders raise many types (OSError, SyntaxError, ...)
        raise ImageError(
            f"{name}: cannot read or decode image ({type(exc).__name__}: {exc})"
        ) from None


def _decode(source: BinaryIO, name: str, max_pixels: int, setting: str | None = None) -> np.ndarray:
    try:
        with _opened(source, name) as image:
            width, height = image.size
            if width * height > max_pixels:
                size = f"{width}x{height} is "
                raise _too_many(name, size, width * height, max_pixels, setting)
            image.load()
            try:
                return _to_grey(ImageOps.exif_transpose(image))
            except ImageError as exc:
                raise ImageError(f"{name}: {exc}") from None
    except _HugeImage as exc:  # past Pillow's own limit, which may be below max_pixels
        pillow = 2 * (Image.MAX_IMAGE_PIXELS or exc.pixels)
        limit = min(max_pixels, pillow)
        raise _too_many(
            name, "", exc.pixels, limit, setting if limit == max_pixels else None
        ) from None
