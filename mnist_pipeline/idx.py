"""Strict IDX (MNIST file format) parsing: pure functions over bytes, no I/O."""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from mnist_pipeline.contract import NUM_CLASSES
from mnist_pipeline.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
UBYTE = 0x08


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
        return int(np.prod(self.dims, dtype=np.int64))


def maybe_gunzip(data: bytes, name: str = "file") -> bytes:
    """Decompress gzip data (detected by magic bytes); pass other data through."""
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{name}: corrupt or truncated gzip data ({exc})") from None


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
    """Images file -> uint8 array [N, rows, cols]."""
    return parse_idx(data, name, ndim=3)


def parse_labels(data: bytes, name: str = "labels") -> np.ndarray:
    """Labels file -> uint8 array [N], every label in 0..9."""
    labels = parse_idx(data, name, ndim=1)
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        bad = int(np.flatnonzero(labels >= NUM_CLASSES)[0])
        raise DataError(f"{name}: label {int(labels[bad])} at index {bad} is outside 0-9")
    return labels
