from __future__ import annotations

import gzip

import numpy as np
import pytest

from mnist_pipeline.core.errors import DataError
from mnist_pipeline.data import idx
from tests.synthetic import idx_bytes


def test_round_trip_images_and_labels() -> None:
    images = np.arange(2 * 28 * 28, dtype=np.uint32).reshape(2, 28, 28).astype(np.uint8)
    labels = np.array([3, 9], dtype=np.uint8)
    assert np.array_equal(idx.parse_images(idx_bytes(images)), images)
    assert np.array_equal(idx.parse_labels(idx_bytes(labels)), labels)


def test_parsed_array_is_writable_and_independent_of_input() -> None:
    data = bytearray(idx_bytes(np.zeros((1, 28, 28), np.uint8)))
    array = idx.parse_images(data)
    array[0, 0, 0] = 7  # would raise on a read-only frombuffer view of bytes
    assert bytes(data) == idx_bytes(np.zeros((1, 28, 28), np.uint8))  # the input unchanged
    data[-1] = 9  # and the array no view of it (a bytearray's view would be writable)
    assert array[0, 27, 27] == 0 and not np.shares_memory(array, np.frombuffer(data, np.uint8))


def test_images_of_another_size_are_refused() -> None:
    with pytest.raises(DataError, match="t10k-images: images are 32x32, expected 28x28"):
        idx.parse_images(idx_bytes(np.zeros((2, 32, 32), np.uint8)), "t10k-images")
    with pytest.raises(DataError, match="images are 28x32, expected 28x28"):  # columns too
        idx.parse_images(idx_bytes(np.zeros((2, 28, 32), np.uint8)))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "too short"),
        (b"\x00\x00\x0d\x01" + b"\x00\x00\x00\x01" + b"\x00" * 4, "wrong magic"),  # float type
        (b"\x12\x34\x08\x01" + b"\x00\x00\x00\x01" + b"\x05", "wrong magic"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated header"),
    ],
)
def test_malformed_headers_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(DataError, match=message):
        idx.parse_idx(data)


def test_wrong_counts_are_rejected_both_ways() -> None:
    good = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DataError, match="byte count mismatch"):
        idx.parse_images(good[:-1])
    with pytest.raises(DataError, match="byte count mismatch"):
        idx.parse_images(good + b"\x00")


def test_dimension_count_is_checked() -> None:
    with pytest.raises(DataError, match="expected 3 dimensions"):
        idx.parse_images(idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(DataError, match="expected 1 dimension"):  # too many, as too few
        idx.parse_labels(idx_bytes(np.zeros((5, 1), np.uint8)))


def test_labels_out_of_range_are_rejected_with_position() -> None:
    with pytest.raises(DataError, match="label 10 at index 2"):
        idx.parse_labels(idx_bytes(np.array([0, 9, 10, 3], np.uint8)))


def test_gunzip_passes_plain_data_and_rejects_truncated_gzip() -> None:
    assert idx.maybe_gunzip(b"\x00\x00\x08\x01") == b"\x00\x00\x08\x01"
    packed = gzip.compress(b"x" * 1000)
    assert idx.maybe_gunzip(packed) == b"x" * 1000
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        idx.maybe_gunzip(packed[: len(packed) // 2], "t.gz")


def test_zeros_padding_a_gzip_stream_are_ignored_as_gzip_does() -> None:
    packed = gzip.compress(b"digits")
    for data in (packed + b"\0" * 8, packed + b"\0" * 3 + gzip.compress(b"!")):
        assert idx.maybe_gunzip(data, "p.gz") == gzip.decompress(data)
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        idx.maybe_gunzip(packed + b"\0\0garbage", "p.gz")  # not zeros: refused


@pytest.mark.parametrize("dims", [(2**31, 2**31, 4), (2**32 - 1,) * 4])
def test_a_header_whose_size_overflows_64_bits_is_a_count_mismatch(dims: tuple[int, ...]) -> None:
    import struct

    header = struct.pack(">HBB", 0, 8, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    needs = 4 + 4 * len(dims) + int(np.prod(np.array(dims, dtype=object)))
    with pytest.raises(DataError, match=f"needs {needs} bytes, file has {len(header)}"):
        idx.parse_idx(header, "lies")
