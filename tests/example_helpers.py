"""Helpers of the Node.js and web example tests: real test digits, tool checks, rendering.

The model these tests load is the session's real-data run (`_real_run` in conftest.py), built by
the pipeline's own stages, so they check the metadata and graph the pipeline really ships.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import struct
import subprocess
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_pipeline.data import idx
from tests.conftest import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; never a browser Playwright downloads
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_skip_reason() -> str | None:
    """Why headless Chromium cannot be driven here, or None when it can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found: apt-get install -y chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python package playwright is not installed: pip install playwright"
    return None


def test_digits(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's test split: uint8 images [N, 28, 28] (white on black) and labels [N]."""
    images = idx.parse_images((data_dir / "t10k-images-idx3-ubyte").read_bytes(), "test images")
    labels = idx.parse_labels((data_dir / "t10k-labels-idx1-ubyte").read_bytes(), "test labels")
    return images, labels


test_digits.__test__ = False  # a helper, not a test


def node_skip_reason(example: str) -> str | None:
    """Why the Node.js-based example `example` cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed (needed for the examples/ tests)"
    if not (EXAMPLES / example / "node_modules").is_dir():
        return (
            f"examples/{example}/node_modules is missing: run `npm ci --prefix examples/{example}`"
        )
    return None


def node_major() -> int:
    out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().lstrip("v").split(".")[0])


def dark_on_light(
    digit: np.ndarray, scale: float, size: tuple[int, int], at: tuple[int, int]
) -> Image.Image:
    """A real digit as a person would photograph it: dark ink on light paper, scaled, offset."""
    side = round(28 * scale)
    ink = np.asarray(Image.fromarray(255 - digit).resize((side, side), Image.Resampling.BICUBIC))
    paper = np.full((size[1], size[0]), 236, np.uint8)
    x, y = at
    paper[y : y + side, x : x + side] = np.minimum(paper[y : y + side, x : x + side], ink)
    return Image.fromarray(paper)


def draw_digit(path: Path, seed: int = 0, rgb: bool = False) -> Path:
    """A dark-on-light 'digit' (a thick stroke) on a large canvas; each `seed` below 40 moves
    it and lengthens its arm, so that no two preprocess to the same 28x28 digit (which ingest
    keeps once)."""
    grey = np.full((200, 170), 235, np.uint8)
    r = 40 + seed % 30
    grey[r : r + 110, 60:80] = 20
    grey[r : r + 20, 80 : 120 + seed % 40] = 20
    image = Image.fromarray(grey)
    (image.convert("RGB") if rgb else image).save(path)
    return path


@contextmanager
def altered_model_server(onnx: bytes) -> Iterator[str]:
    """What a client must refuse: a /model.onnx altered on its way (by a proxy, a cache), one
    byte changed, sent with the X-Model-SHA256 of the original; /unhashed/model.onnx, the
    original without that header; /cut/model.onnx, whose connection closes halfway through the
    body. CORS open to any page. Yields the base URL (127.0.0.1, a free port)."""
    altered = bytes([onnx[0] ^ 1]) + onnx[1:]
    headers = {
        "Content-Type": "application/octet-stream",
        "X-Model-SHA256": hashlib.sha256(onnx).hexdigest(),
        "X-Model-Version": "1",
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Expose-Headers": "X-Model-SHA256, X-Model-Version",
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            path = self.path.split("?")[0]
            found = path in ("/model.onnx", "/unhashed/model.onnx", "/cut/model.onnx")
            body = onnx if path == "/unhashed/model.onnx" else altered
            self.send_response(200 if found else 404)
            for name, value in headers.items() if found else ():
                if not (path == "/unhashed/model.onnx" and name == "X-Model-SHA256"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body) if found else 0))
            self.end_headers()
            if path == "/cut/model.onnx":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)  # the rest never comes
                self.close_connection = True
                return
            self.wfile.write(body if found else b"")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with one row of data (a bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1))  # one row; the rest is missing
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def flat_model() -> bytes:
    """An ONNX model with the contract's names that takes [N, 784], not [N, 1, 28, 28]: it
    loads, and fails on the first image (what a client must report, not crash on)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["probabilities"])],
        "flat",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 784])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 784])],
    )
    opset = [helper.make_opsetid("", 18)]
    return helper.make_model(graph, opset_imports=opset, ir_version=8).SerializeToString()


def narrow_model() -> bytes:
    """An ONNX model with the contract's names and input that answers 5 values an image, not
    10: it runs, and a client reading rows of 10 would mix up the images' answers."""
    from onnx import TensorProto, helper

    bounds = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in
              (("start", 0), ("end", 5), ("axis", 1))]  # fmt: skip
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"], axis=1),
            helper.make_node("Slice", ["flat", "start", "end", "axis"], ["probabilities"]),
        ],
        "narrow",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 5])],
        initializer=bounds,
    )
    opset = [helper.make_opsetid("", 18)]
    return helper.make_model(graph, opset_imports=opset, ir_version=8).SerializeToString()


def reshape_failing_model() -> bytes:
    """An ONNX model with the contract's input and outputs (logits and probabilities [N, 10])
    that loads and fails when run: its Reshape makes 784 pixels into rows of 10."""
    from onnx import TensorProto, helper

    rows = helper.make_tensor("rows", TensorProto.INT64, [2], [-1, 10])
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"], axis=1),
            helper.make_node("Reshape", ["flat", "rows"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "reshape-failing",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 10])
            for name in ("logits", "probabilities")
        ],
        initializer=[rows],
    )
    opset = [helper.make_opsetid("", 18)]
    return helper.make_model(graph, opset_imports=opset, ir_version=8).SerializeToString()
