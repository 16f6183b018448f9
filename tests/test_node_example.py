"""examples/node: the Node.js program agrees with `mnist-pipeline predict` on real digit images.

Real MNIST test digits are rendered as a person would photograph them (dark on light, scaled,
offset) in several encodings; the JS preprocessing must reproduce Python's 28x28 arrays and the
onnxruntime-node probabilities must match Python's onnxruntime ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.data.decode import ImageError
from mnist_pipeline.data.preprocess import preprocess_file
from tests.conftest import unavailable
from tests.example_helpers import (
    EXAMPLES,
    altered_model_server,
    dark_on_light,
    draw_digit,
    flat_model,
    narrow_model,
    node_skip_reason,
)
from tests.example_helpers import test_digits as load_test_digits
from tests.process_helpers import mnist_server
from tests.registry_helpers import register_layout

pytestmark = pytest.mark.e2e
PREDICT = EXAMPLES / "node" / "predict.mjs"


@pytest.fixture(scope="module", autouse=True)
def _node_ready() -> None:
    if reason := node_skip_reason("node"):
        unavailable(reason)


@pytest.fixture(scope="module", params=["classic", "wide"])
def model(request: pytest.FixtureRequest) -> Layout:
    """A session's real-data run (each architecture): its ONNX model and its data."""
    return request.getfixturevalue("_real_run" if request.param == "classic" else "_real_wide_run")


def _variants(digit: np.ndarray, i: int, folder: Path) -> list[Path]:
    """One real digit in several files: the decoders, colour modes and geometry paths."""
    paper = dark_on_light(digit, 2.5 + 0.25 * i, (150 + 7 * i, 150), (5 + 3 * i, 4 + i % 4 * 2))
    out = {
        "grey.png": paper,
        "grey.jpg": paper,
        "white-on-black.png": Image.fromarray(255 - np.asarray(paper)),
        "palette.png": paper.convert("P"),
        "wide.png": paper.resize((paper.width * 2, paper.height // 2 + 10)),
    }
    rgb = np.stack([np.asarray(paper)] * 3, axis=-1).astype(np.float32)
    tint = rgb * np.array([0.85, 0.9, 1.0]) + np.array([20.0, 10.0, 0.0])  # blue ink, cream paper
    out["colour.jpg"] = Image.fromarray(tint.clip(0, 255).astype(np.uint8))
    alpha = 255 - np.asarray(paper)  # ink on a transparent sheet
    out["alpha.png"] = Image.fromarray(np.stack([np.zeros_like(alpha)] * 3 + [alpha], -1), "RGBA")
    white = np.full_like(alpha, 255)  # white ink on a transparent sheet
    out["white-alpha.png"] = Image.fromarray(np.stack([white] * 3 + [alpha], -1), "RGBA")
    out["grey16.png"] = Image.fromarray(np.asarray(paper).astype(np.uint16) * 257)
    # JPEG chroma subsampling 4:4:4 and 4:2:2 (Pillow's default is 4:2:0) and progressive
    save = {name: {"quality": 92} for name in out if name.endswith(".jpg")}
    for name, options in (
        ("colour444.jpg", {"subsampling": 0}),
        ("colour422.jpg", {"subsampling": 1}),
        ("progressive.jpg", {"progressive": True}),
    ):
        out[name], save[name] = out["colour.jpg"], {"quality": 92, **options}
    # PNG: grey with alpha, a palette with a transparent entry, 1-bit and 4-bit samples
    out["grey-alpha.png"] = Image.fromarray(np.stack([np.zeros_like(alpha), alpha], -1), "LA")
    out["palette-trns.png"] = paper.convert("P")
    save["palette-trns.png"] = {"transparency": int(np.asarray(paper.convert("P"))[0, 0])}
    out["bilevel.png"] = paper.point(lambda v: 255 if v > 128 else 0).convert("1")
    out["palette4.png"] = paper.quantize(16)
    save["palette4.png"] = {"bits": 4}
    paths = []
    for name, image in out.items():
        path = folder / f"d{i}-{name}"
        image.save(path, **save.get(name, {}))
        paths.append(path)
    # Camera orientation tags: pixels stored turned, EXIF says how to turn them upright (each
    # of these turns is its own inverse but 6's and 8's, which are each other's).
    T = Image.Transpose
    stored = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 5: T.TRANSPOSE, 6: T.ROTATE_90}
    stored |= {7: T.TRANSVERSE, 8: T.ROTATE_270}
    for orientation, turn in stored.items():
        exif = Image.Exif()
        exif[0x0112] = orientation
        for suffix in ("jpg", "png") if orientation == 6 else ("jpg",):
            path = folder / f"d{i}-exif{orientation}.{suffix}"
            paper.transpose(turn).save(path, exif=exif)
            paths.append(path)
    # No EXIF, the orientation in XMP (a JPEG's APP1 packet, a PNG's compressed iTXt chunk)
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
    xmp += b'02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/"'
    xmp += b' tiff:Orientation="8"/></rdf:RDF></x:xmpmeta>'
    text = PngInfo()
    text.add_itxt("XML:com.adobe.xmp", xmp.decode(), zip=True)
    for suffix, options in (("jpg", {"xmp": xmp}), ("png", {"pnginfo": text})):
        path = folder / f"d{i}-xmp8.{suffix}"
        paper.transpose(T.ROTATE_270).save(path, **options)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def images(model: Layout, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[int]]:
    """Files rendered from the first test digit of each class, with their true labels."""
    digits, labels = load_test_digits(model.data_dir)
    folder = tmp_path_factory.mktemp("node-images")
    files, truth = [], []
    for label in range(10):
        index = int(np.flatnonzero(labels == label)[0])
        for path in _variants(digits[index], label, folder):
            files.append(path)
            truth.append(label)
    return files, truth


def node(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(PREDICT), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def python_predict(model: Path, files: list[Path]) -> list[dict]:
    """The pipeline's own command: `mnist-pipeline predict --json --top 3 --model ...`."""
    cmd = [sys.executable, "-m", "mnist_pipeline", "predict", "--json", "--top", "3"]
    done = subprocess.run(
        [*cmd, "--model", str(model), *map(str, files)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_preprocessed_inputs_match_python(images: tuple[list[Path], list[int]]) -> None:
    files, _ = images
    done = node("--dump-input", *files)
    assert done.returncode == 0, done.stderr
    dumped = json.loads(done.stdout)
    assert [d["file"] for d in dumped] == [str(f) for f in files]
    for entry, path in zip(dumped, files, strict=True):
        js = np.array(entry["input"], dtype=np.float32).reshape(28, 28)
        py = preprocess_file(path)
        # Same decoded pixels and the same float32 arithmetic in the same order: equal bits.
        np.testing.assert_array_equal(js, py, err_msg=path.name)


def test_predictions_match_mnist_pipeline_predict(
    model: Layout, images: tuple[list[Path], list[int]]
) -> None:
    files, truth = images
    done = node("--json", "--top", "3", "--model", model.onnx, *files)
    assert done.returncode == 0, done.stderr
    js, py = json.loads(done.stdout), python_predict(model.onnx, files)
    assert [p["file"] for p in js] == [p["file"] for p in py] == [str(f) for f in files]
    assert [p["digit"] for p in js] == [p["digit"] for p in py]
    for a, b in zip(js, py, strict=True):
        assert set(a) == set(b) == {"file", "digit", "probability", "top"}
        assert [t["digit"] for t in a["top"]] == [t["digit"] for t in b["top"]]
        for t, u in zip(a["top"], b["top"], strict=True):
            assert t["probability"] == pytest.approx(u["probability"], abs=1e-4), a["file"]
    # The shared preprocessing works on real digits, not just consistently.
    correct = sum(p["digit"] == label for p, label in zip(js, truth, strict=True))
    assert correct >= 0.9 * len(files), f"only {correct}/{len(files)} correct"


def test_text_output_bad_files_and_bad_model(
    model: Layout, images: tuple[list[Path], list[int]], tmp_path: Path
) -> None:
    good = images[0][0]
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    blank = tmp_path / "blank.png"
    Image.new("L", (40, 40), 250).save(blank)
    done = node("--model", model.onnx, good, bad, blank, tmp_path / "missing.png")
    assert done.returncode == 1, done.stderr
    (answer,) = done.stdout.splitlines()  # the answers alone, as `mnist-pipeline predict`'s
    assert re.fullmatch(rf"{re.escape(str(good))}: 0 \(p=[01]\.\d{{3}}\)", answer)
    lines = done.stderr.splitlines()  # the model and the files that failed
    assert lines[0] == f"model: {model.onnx}"
    not_image = "not a recognised image file (this example reads PNG and JPEG)"
    assert lines[1] == f"error: {bad}: {not_image}"
    assert lines[2].startswith(f"error: {blank}: blank image: no ink found")
    assert lines[3] == f"error: {tmp_path / 'missing.png'}: no such file"

    not_a_model = tmp_path / "model.onnx"
    not_a_model.write_bytes(b"\x00" * 64)
    done = node("--model", not_a_model, good)
    assert done.returncode == 1
    assert f"onnxruntime cannot load {not_a_model}" in done.stderr
    flat = tmp_path / "flat.onnx"  # the right names, but it takes [N, 784]
    flat.write_bytes(flat_model())
    done = node("--model", flat, good)
    assert done.returncode == 1 and done.stderr.startswith(
        f"error: {flat} cannot classify a [1, 1, 28, 28] float32 batch: "
    ), done.stderr
    assert "    at " not in done.stderr  # one line, no stack trace
    narrow = tmp_path / "narrow.onnx"  # runs, but answers 5 values an image
    narrow.write_bytes(narrow_model())
    done = node("--model", narrow, good, good)
    assert (done.returncode, done.stdout) == (1, ""), done.stdout
    assert done.stderr == (
        f"error: {narrow} answered float32 probabilities of shape [2, 5], not [2, 10] float32: "
        "not an mnist-pipeline model\n"
    )
    done = node("--model", tmp_path / "none.onnx", good)
    assert (done.returncode, done.stderr) == (
        1,
        f"error: model file not found: {tmp_path / 'none.onnx'}\n",
    )
    too_many = node("--top", "11", good)
    assert too_many.returncode == 2
    assert too_many.stderr == "error: --top must be an integer from 1 to 10, got 11\n"


def test_the_model_a_real_server_serves_checked_against_its_sha256(
    model: Layout, images: tuple[list[Path], list[int]], tmp_path: Path
) -> None:
    """--server URL: production from a real `mnist-pipeline serve`, the bytes checked against
    X-Model-SHA256; it answers as the same model loaded from its file does."""
    files = images[0][::5]
    register_layout(tmp_path / "registry", model, tmp_path / "candidate")
    sha = hashlib.sha256(model.onnx.read_bytes()).hexdigest()
    with mnist_server(tmp_path, tmp_path / "serve.log") as url:
        served = node("--server", url, "--json", "--top", "3", *files)
        text = node("--server", f"{url}/", files[0])
    assert served.returncode == 0, served.stderr
    from_file = node("--model", model.onnx, "--json", "--top", "3", *files)
    assert json.loads(served.stdout) == json.loads(from_file.stdout)
    assert text.returncode == 0, text.stderr
    assert text.stderr.splitlines()[0] == (
        f"model: {url}/model.onnx (version 1, SHA-256 {sha} verified)"
    )
    with altered_model_server(model.onnx.read_bytes()) as altered:
        refused = node("--server", altered, files[0])
        missing = node("--server", f"{altered}/elsewhere", files[0])
        unhashed = node("--server", f"{altered}/unhashed", files[0])
        cut = node("--server", f"{altered}/cut", files[0])
    assert unhashed.returncode == 1 and unhashed.stderr == (
        f"error: {altered}/unhashed/model.onnx sent no X-Model-SHA256 header: "
        "not an mnist-pipeline server?\n"
    )
    assert cut.returncode == 1 and cut.stdout == ""
    assert cut.stderr.startswith(f"error: the download of {altered}/cut/model.onnx broke off: ")
    assert "    at " not in cut.stderr
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith(f"error: {altered}/model.onnx: the bytes received have ")
    assert refused.stderr.endswith(f", not {sha} as X-Model-SHA256 says\n")
    assert missing.returncode == 1
    assert missing.stderr == f"error: {altered}/elsewhere/model.onnx answered HTTP 404: \n"
    both = node("--server", url, "--model", model.onnx, files[0])
    assert both.returncode == 2 and both.stdout == ""
    assert both.stderr.startswith("error: give --model or --server, not both\n"), both.stderr


def _png16_rgb(pixels: np.ndarray, path: Path) -> Path:
    """A 16-bit RGB PNG (Pillow writes colour PNGs only at 8 bits): rows of big-endian samples."""
    import struct
    import zlib

    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[r].astype(">u2").tobytes() for r in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return path


def test_corrupt_jpegs_do_not_spoil_the_files_after_them(tmp_path: Path) -> None:
    """Each libjpeg error leaves the WebAssembly decoder's memory behind; after a few hundred
    every decode failed. A failed decode loads a fresh decoder: the good file last still reads."""
    rng = np.random.default_rng(3)
    good = tmp_path / "good.jpg"
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(good, quality=90)
    data = bytearray(good.read_bytes())
    table = data.find(b"\xff\xc4")  # the Huffman table, scrambled
    data[table + 5 : table + 25] = bytes([0x00, 0xFF] * 10)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(bytes(data))
    done = node("--dump-input", *([bad] * 300), good)
    assert done.returncode == 1, done.stderr
    *errors, last = json.loads(done.stdout)
    told = f"{bad}: cannot read or decode image (libjpeg-turbo: a corrupt or unsupported JPEG)"
    assert [e["error"] for e in errors] == [told] * 300
    np.testing.assert_array_equal(
        np.array(last["input"], np.float32).reshape(28, 28), preprocess_file(good)
    )


def test_sixteen_bit_colour_cmyk_and_a_bad_server_url(tmp_path: Path) -> None:
    """16-bit colour samples keep their high byte, as Pillow's; a CMYK JPEG (which the
    WebAssembly decoder cannot convert, and whose failure would leak its buffers) is refused
    before decoding, naming what to do; a --server that is not an http(s) URL is a usage error."""
    rng = np.random.default_rng(5)
    paper = np.full((60, 50, 3), 0xE000, np.uint16) + rng.integers(0, 0x0FFF, (60, 50, 3)).astype(
        np.uint16
    )
    paper[15:45, 20:28] = [0x1000, 0x2000, 0x3000]  # a bar of dark blue ink
    deep = _png16_rgb(paper, tmp_path / "deep.png")
    cmyk = tmp_path / "scan.jpg"
    Image.new("CMYK", (40, 40), (0, 0, 0, 0)).save(cmyk)
    done = node("--dump-input", deep, cmyk)
    assert done.returncode == 1, done.stderr  # a file that could not be used, as for predict
    dumped = json.loads(done.stdout)
    js = np.array(dumped[0]["input"], dtype=np.float32).reshape(28, 28)
    np.testing.assert_array_equal(js, preprocess_file(deep))
    assert (
        dumped[1]["error"]
        == f"{cmyk}: a CMYK JPEG: this example reads greyscale and RGB JPEGs (save it as RGB)"
    )
    for server in ("not a url", "127.0.0.1:8000", "ftp://127.0.0.1/"):  # no http(s) scheme
        done = node("--server", server, deep)
        assert done.returncode == 2, (server, done.stderr)
        assert f"--server must be an http(s) URL such as http://127.0.0.1:8000, got {server}" in (
            done.stderr
        )


def test_the_repositorys_own_export_is_used_only_as_its_parity_check_left_it(
    real_run: Layout, tmp_path: Path
) -> None:
    """Without --model the example takes models/model.onnx beside it only if reports/parity.json
    passed that very file, exported from the weights now in models/model.pt."""
    import os
    import shutil

    repo = tmp_path / "repo"  # the example as it sits in a checkout, with a real run's outputs
    (repo / "examples" / "node").mkdir(parents=True)
    for name in ("predict.mjs", "decode.mjs"):
        shutil.copy(EXAMPLES / "node" / name, repo / "examples" / "node" / name)
    os.symlink(EXAMPLES / "node" / "node_modules", repo / "examples" / "node" / "node_modules")
    shutil.copytree(EXAMPLES / "js", repo / "examples" / "js")
    (repo / "models").mkdir()
    (repo / "reports").mkdir()
    for path in (real_run.onnx, real_run.state_dict, real_run.parity_report):
        shutil.copy(path, repo / path.relative_to(real_run.root))
    parity_file = repo / "reports" / "parity.json"
    parity = json.loads(parity_file.read_text())
    good = draw_digit(tmp_path / "digit.png")

    def run() -> subprocess.CompletedProcess[str]:
        script = repo / "examples" / "node" / "predict.mjs"
        return subprocess.run(
            ["node", str(script), str(good)], capture_output=True, text=True, timeout=120
        )

    assert run().returncode == 0, run().stderr
    onnx = repo / "models" / "model.onnx"
    for record, told in (
        ({**parity, "passed": False}, "failed its parity check against PyTorch"),
        ({**parity, "onnx_sha256": "0" * 64}, "is not the model its parity check passed"),
    ):
        parity_file.write_text(json.dumps(record))
        refused = run()
        assert refused.returncode == 1 and told in refused.stderr, refused.stderr
        assert refused.stderr.startswith(f"error: {onnx}") and refused.stdout == ""
    parity_file.write_text(json.dumps(parity))
    (repo / "models" / "model.pt").write_bytes(b"weights trained since, refused by the gate")
    refused = run()
    assert refused.returncode == 1 and "was exported from other weights" in refused.stderr
    (repo / "models" / "model.pt").unlink()
    (repo / "models" / "model.pt").mkdir()  # a folder where the weights belong: named, one line
    refused = run()
    assert (refused.returncode, refused.stderr) == (
        1,
        f"error: cannot read {repo / 'models' / 'model.pt'}: EISDIR\n",
    )
    parity_file.write_text("null")
    refused = run()
    assert refused.returncode == 1 and refused.stderr == (
        f"error: {parity_file} is not a parity record (null): run mnist-pipeline parity again\n"
    )
    parity_file.unlink()
    refused = run()
    assert refused.returncode == 1 and "has no parity record" in refused.stderr
    chosen = subprocess.run(
        ["node", str(repo / "examples" / "node" / "predict.mjs"), "--model", str(onnx), str(good)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert chosen.returncode == 0, chosen.stderr  # a model named by the user: used as it is


def _exif_segment(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    body = exif.tobytes()  # starts with Exif\0\0
    assert body.startswith(b"Exif\0\0MM") or body.startswith(b"Exif\0\0II")
    return b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body


def _segments_before_scan(jpeg: bytes) -> tuple[bytes, list[bytes], bytes]:
    """SOI, the marker segments up to the scan, and the scan onwards."""
    pos, segments = 2, []
    while jpeg[pos + 1] != 0xDA:
        length = int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        segments.append(jpeg[pos : pos + 2 + length])
        pos += 2 + length
    return jpeg[:2], segments, jpeg[pos:]


def test_exif_orientation_after_the_frame_header_or_in_two_segments(tmp_path: Path) -> None:
    """Pillow reads every segment up to the scan and joins the Exif segments, the first one's
    TIFF header first: so does the example (an Exif segment after the frame header is legal)."""
    paper = np.full((37, 29), 235, np.uint8)
    paper[5:30, 8:14] = 20
    paper[5:11, 14:24] = 20  # an upright "7"-ish stroke, 29 wide and 37 high
    stored = io.BytesIO()
    Image.fromarray(paper).transpose(Image.Transpose.ROTATE_90).save(stored, format="JPEG")
    soi, segments, scan = _segments_before_scan(stored.getvalue())
    frame = next(i for i, s in enumerate(segments) if s[1] == 0xC0)
    tiff = _exif_segment(6)[10:]  # past the marker, the length and Exif\0\0
    split = [  # the TIFF header in one segment, the tags in the next: Pillow joins them
        b"\xff\xe1" + (len(part) + 8).to_bytes(2, "big") + b"Exif\0\0" + part
        for part in (tiff[:8], tiff[8:])
    ]
    files = {
        "after-frame.jpg": [*segments[: frame + 1], _exif_segment(6), *segments[frame + 1 :]],
        "two-exif.jpg": [_exif_segment(6), _exif_segment(3), *segments],
        "split-exif.jpg": [*split, *segments],
    }
    paths = []
    for name, parts in files.items():
        path = tmp_path / name
        path.write_bytes(soi + b"".join(parts) + scan)
        with Image.open(path) as image:
            assert image.getexif()[0x0112] == 6  # what Pillow reads: the upright digit
        paths.append(path)
    done = node("--dump-input", *paths)
    assert done.returncode == 0, done.stderr
    for entry, path in zip(json.loads(done.stdout), paths, strict=True):
        js = np.array(entry["input"], dtype=np.float32).reshape(28, 28)
        np.testing.assert_array_equal(js, preprocess_file(path), err_msg=path.name)


def test_a_png_exif_chunk_with_the_jpeg_prefix_is_read_as_pillow_reads_it(tmp_path: Path) -> None:
    """Some writers start a PNG's eXIf chunk with JPEG's `Exif\\0\\0`; Pillow reads the
    orientation behind it, and so must the example."""
    paper = np.full((37, 29), 235, np.uint8)
    paper[5:30, 8:14] = 20
    paper[5:11, 14:24] = 20
    stored = io.BytesIO()
    Image.fromarray(paper).transpose(Image.Transpose.ROTATE_90).save(stored, format="PNG")
    png = stored.getvalue()
    body = _exif_segment(6)[4:]  # Exif\0\0 and the TIFF block
    chunk = len(body).to_bytes(4, "big") + b"eXIf" + body
    chunk += zlib.crc32(chunk[4:]).to_bytes(4, "big")
    idat = png.index(b"IDAT") - 4
    path = tmp_path / "prefixed.png"
    path.write_bytes(png[:idat] + chunk + png[idat:])
    with Image.open(path) as image:
        assert image.getexif()[0x0112] == 6
    assert preprocess_file(path).shape == (28, 28)
    done = node("--dump-input", path)
    assert done.returncode == 0, done.stderr
    js = np.array(json.loads(done.stdout)[0]["input"], dtype=np.float32).reshape(28, 28)
    np.testing.assert_array_equal(js, preprocess_file(path))


def test_a_png_whose_text_inflates_past_pillows_limit_is_refused_as_pillow_does(
    tmp_path: Path,
) -> None:
    """A 2 KB zTXt or iTXt chunk that inflates to 2 MB: Pillow refuses the file (its 1 MB
    MAX_TEXT_CHUNK); the example inflated an XMP one whole (400 MB took over a gigabyte)."""
    paper = np.full((37, 29), 235, np.uint8)
    paper[5:30, 8:14] = 20
    stored = io.BytesIO()
    Image.fromarray(paper).save(stored, format="PNG")
    png = stored.getvalue()
    idat = png.index(b"IDAT") - 4
    bomb = zlib.compress(b" " * (2 << 20), 9)
    small = zlib.compress(b"a comment")
    bodies = {
        "xmp.png": b"iTXt" + b"XML:com.adobe.xmp\0\x01\x00\0\0" + bomb,
        "comment.png": b"zTXt" + b"Comment\0\x00" + bomb,
        "fine.png": b"zTXt" + b"Comment\0\x00" + small,
    }
    paths = []
    for name, body in bodies.items():
        chunk = (len(body) - 4).to_bytes(4, "big") + body
        chunk += zlib.crc32(body).to_bytes(4, "big")
        paths.append(tmp_path / name)
        paths[-1].write_bytes(png[:idat] + chunk + png[idat:])
    done = node("--dump-input", *paths)
    entries = json.loads(done.stdout)
    for entry, path in zip(entries[:2], paths[:2], strict=True):
        assert "a compressed text chunk over 1 MB" in entry["error"], entry
        with pytest.raises(ImageError, match="Decompressed data too large"):
            preprocess_file(path)
    js = np.array(entries[2]["input"], dtype=np.float32).reshape(28, 28)
    np.testing.assert_array_equal(js, preprocess_file(paths[2]))


def test_without_its_packages_the_example_says_to_install_them(tmp_path: Path) -> None:
    """Before `npm ci` Node printed an ERR_MODULE_NOT_FOUND stack trace."""
    import shutil

    copy = tmp_path / "examples"
    shutil.copytree(EXAMPLES / "js", copy / "js")
    shutil.copytree(EXAMPLES / "node", copy / "node", ignore=shutil.ignore_patterns("node_modules"))
    done = subprocess.run(
        ["node", str(copy / "node" / "predict.mjs"), "digit.png"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "at " not in done.stderr, done.stderr
    assert done.stderr.startswith("error: Cannot find package 'onnxruntime-node'")
    assert done.stderr.rstrip().endswith("run npm ci --prefix examples/node first")
