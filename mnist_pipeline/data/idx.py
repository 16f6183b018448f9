"""Strict IDX (MNIST file format) parsing and encoding: pure functions over bytes, no I/O."""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from mnist_pipeline.core.contract import IMAGE_SIZE, NUM_CLASSES
from mnist_pipeline.core.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
UBYTE = 0x08
# Cap on one dataset file, compressed or not (MNIST's largest decompresses to 47,040,016 bytes).
MAX_FILE_BYTES = 64 << 20


@dataclass(frozen=True)
class IdxHeader:
    """Decoded IDX header: element type code and dimensions."""

    type_code: int
    dims: tuple[int, ...]

    @property
    def header_bytes(self) -> int:
        return 4 + 4 * len(self.dims)

    @property
    def payload_bytes(self) -> int:
        return math.prod(self.dims)  # Python ints: a lying header cannot overflow it


def maybe_gunzip(data: bytes, name: str = "file", limit: int | None = None) -> bytes:
    """Decompress gzip data (detected by magic bytes); pass other data through.

    Decompression stops as soon as the output would exceed `limit` bytes: a small archive that
    expands to gigabytes (a gzip bomb) is refused after at most `limit` bytes of work.
    `limit` defaults to MAX_FILE_BYTES.
    """
    limit = MAX_FILE_BYTES if limit is None else limit
    if not data.startswith(GZIP_MAGIC):
        if len(data) > limit:
            raise DataError(f"{name}: {len(data):,} bytes is more than the {limit:,} allowed")
        return data
    out = bytearray()
    rest = data
    try:
        while rest:  # one gzip member after another, as gzip.decompress does
            member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            out += member.decompress(rest, limit + 1 - len(out))
            if len(out) > limit or member.unconsumed_tail:
                raise DataError(
                    f"{name}: expands to more than {limit:,} bytes (refused: a gzip bomb?)"
                )
            if not member.eof:
                raise DataError(f"{name}: corrupt or truncated gzip data (no end of stream)")
            rest = member.unused_data.lstrip(b"\0")  # zeros padding after a member, as gzip
    except zlib.error as exc:
        raise DataError(f"{name}: corrupt or truncated gzip data ({exc})") from None
    return bytes(out)


def parse_header(data: bytes, name: str = "file") -> IdxHeader:
    """Read and check the magic number and dimensions (unsigned bytes only)."""
    if len(data) < 4:
        raise DataError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code != UBYTE or ndim == 0:
        raise DataError(
            f"{name}: wrong magic number 0x{data[:4].hex()} "
            "(expected 0x000008NN: unsigned-byte IDX with NN dimensions)"
        )
    end = 4 + 4 * ndim
    if len(data) < end:
        raise DataError(f"{name}: truncated header (needs {end} bytes, has {len(data)})")
    dims = struct.unpack(f">{ndim}I", data[4:end])
    return IdxHeader(type_code=type_code, dims=tuple(dims))


def parse_idx(data: bytes, name: str = "file", ndim: int | None = None) -> np.ndarray:
    """Parse a whole (decompressed) IDX file into a uint8 array, checking the byte count."""
    header = parse_header(data, name)
    if ndim is not None and len(header.dims) != ndim:
        raise DataError(f"{name}: expected {ndim} dimensions, header says {len(header.dims)}")
    expected = header.header_bytes + header.payload_bytes
    if len(data) != expected:
        raise DataError(
            f"{name}: byte count mismatch: header {header.dims} needs {expected} bytes, "
            f"file has {len(data)}"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=header.header_bytes)
    return array.reshape(header.dims).copy()


def parse_images(data: bytes, name: str = "images") -> np.ndarray:
    """Images file -> uint8 array [N, 28, 28] (other sizes are refused: the network takes
    28x28)."""
    images = parse_idx(data, name, ndim=3)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        rows, cols = images.shape[1:]
        raise DataError(f"{name}: images are {rows}x{cols}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    return images


def parse_labels(data: bytes, name: str = "labels") -> np.ndarray:
    """Labels file -> uint8 array [N], every label in 0..9."""
    labels = parse_idx(data, name, ndim=1)
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        bad = int(np.flatnonzero(labels >= NUM_CLASSES)[0])
        raise DataError(f"{name}: label {int(labels[bad])} at index {bad} is outside 0-9")
    return labels


def encode_idx(array: np.ndarray) -> bytes:
    """uint8 array (any shape, 1-255 dimensions) -> IDX bytes that `parse_idx` reads back."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs a uint8 array of 1-255 dimensions, got {array.dtype}")
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    return struct.pack(">HBB", 0, UBYTE, array.ndim) + dims + array.tobytes()
