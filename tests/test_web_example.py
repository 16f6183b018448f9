"""examples/web: a person draws real MNIST digits with the mouse; the page shows the right label.

Headless Debian Chromium (/usr/bin/chromium, never a downloaded browser) driven by Playwright;
the repository is served on 127.0.0.1 by a throwaway http.server whose /models/model.onnx (with
/models/model.pt and /reports/parity.json) is the session's real-data run's (conftest.py).
Requests to anything but that server are aborted, except, in the test that loads the model from
it, to a real `mnist-pipeline serve`; one browser per model covers the file and the server case.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.data.preprocess import preprocess_file
from mnist_pipeline.inbox import pending
from mnist_pipeline.inbox import store as inbox
from mnist_pipeline.serving.predict import predict_files
from mnist_pipeline.serving.tokens import token_sha256
from tests.conftest import REPO_ROOT, unavailable
from tests.example_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    altered_model_server,
    chromium_skip_reason,
    flat_model,
)
from tests.example_helpers import test_digits as load_test_digits
from tests.process_helpers import mnist_server
from tests.registry_helpers import register_layout


def _skip_reason() -> str | None:
    if reason := chromium_skip_reason():
        return reason
    if not (REPO_ROOT / "examples" / "web" / "node_modules" / "onnxruntime-web").is_dir():
        return "examples/web/node_modules is missing: run `npm ci --prefix examples/web`"
    return None


pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", autouse=True)
def _browser_ready() -> None:
    if reason := _skip_reason():
        unavailable(reason)


SCALE = 10  # 28x28 digit -> the page's 280x280 drawing pad


class _Handler(SimpleHTTPRequestHandler):
    run: Layout
    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".onnx": "application/octet-stream",
    }

    def translate_path(self, path: str) -> str:
        run = self.run  # the repository's export as a real run left it: ONNX, weights, parity
        mapped = {
            "/models/model.onnx": run.onnx,
            "/models/model.pt": run.state_dict,
            "/reports/parity.json": run.parity_report,
        }.get(path.split("?")[0])
        return str(mapped) if mapped else super().translate_path(path)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        pass


@pytest.fixture(scope="module", params=["classic", "wide"])
def site(request: pytest.FixtureRequest) -> Iterator[tuple[str, Layout]]:
    """The repo served on a free 127.0.0.1 port, with a real run's model (each architecture) as
    /models/model.onnx, its weights and its parity record."""
    model = request.getfixturevalue("_real_run" if request.param == "classic" else "_real_wide_run")
    handler = type("Handler", (_Handler,), {"run": model})
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(REPO_ROOT))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", model
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def page(site: tuple[str, Layout]):
    from playwright.sync_api import sync_playwright

    origin, _ = site
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 900, "height": 620}, has_touch=True)
        context.route(
            "**/*",
            lambda route: (
                route.continue_() if route.request.url.startswith(origin + "/") else route.abort()
            ),
        )
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{origin}/examples/web/")
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        yield page
        assert errors == [], errors
        browser.close()


def strokes(digit: np.ndarray) -> list[tuple[int, int, int]]:
    """Horizontal pen strokes (row, first column, last column) over the digit's ink pixels."""
    ink = digit > 100
    out = []
    for r in range(28):
        c = 0
        while c < 28:
            if ink[r, c]:
                start = c
                while c + 1 < 28 and ink[r, c + 1]:
                    c += 1
                out.append((r, start, c))
            c += 1
    return out


def draw(page, digit: np.ndarray) -> None:
    """Draw `digit` on the pad with the mouse, as a person tracing it row by row would."""
    box = page.locator("#pad").bounding_box()
    border = page.evaluate("() => document.getElementById('pad').clientLeft")
    left, top = box["x"] + border, box["y"] + border  # the canvas's pixels start inside it
    for r, c0, c1 in strokes(digit):
        y = top + (r + 0.5) * SCALE
        page.mouse.move(left + (c0 + 0.5) * SCALE, y)
        page.mouse.down()
        page.mouse.move(left + (c1 + 0.5) * SCALE, y, steps=2)
        page.mouse.up()


# The pad's RGBA bytes as base64 (a JSON array of its 313,600 numbers took 2 s to cross over)
PAD_BYTES_JS = """() => {
  const data = document.getElementById('pad').getContext('2d').getImageData(0, 0, 280, 280).data;
  let text = '';
  for (let i = 0; i < data.length; i += 0x8000) {
    text += String.fromCharCode(...data.subarray(i, i + 0x8000));
  }
  return btoa(text);
}"""


def pad_pixels(page) -> np.ndarray:
    """The drawing pad's pixels as the page holds them, [280, 280, 4] RGBA."""
    raw = base64.b64decode(page.evaluate(PAD_BYTES_JS))
    return np.frombuffer(raw, np.uint8).reshape(280, 280, 4)


def preview_pixels(page) -> np.ndarray:
    """The "what the model sees" canvas, [28, 28] (its red channel; the page paints grey)."""
    rgba = page.evaluate(
        "() => Array.from(document.getElementById('preview').getContext('2d')"
        ".getImageData(0, 0, 28, 28).data)"
    )
    return np.array(rgba, np.uint8).reshape(28, 28, 4)[..., 0]


def shown(page) -> tuple[str, list[str]]:
    """The displayed label and top-3 rows, once the page has classified the latest drawing."""
    page.wait_for_selector("#result[data-pending=false]", timeout=30_000)
    return page.inner_text("#digit"), page.locator("#top li").all_inner_texts()


def python_top3(model: Path, rgba: np.ndarray, folder: Path) -> list[tuple[int, float]]:
    """What `mnist-pipeline predict --top 3` says about the same pixels (saved as an RGBA PNG)."""
    path = folder / "pad.png"
    Image.fromarray(rgba, "RGBA").save(path)
    (prediction,) = predict_files(model, [path], top=3).predictions
    return list(prediction.top)


def clear_examples(model: Path, digits: np.ndarray, labels: np.ndarray) -> dict[int, int]:
    """For each class, the first test digit the model itself finds clear (p >= 0.95 as an image).

    MNIST has ambiguous digits that a one-epoch model gets wrong however they are drawn; those
    say nothing about the page.
    """
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    images = (digits[:1000, None] / 255).astype(np.float32)
    probs = session.run(["probabilities"], {"image": images})[0]
    return {
        c: int(next(i for i in np.flatnonzero(labels[:1000] == c) if probs[i, c] >= 0.95))
        for c in range(10)
    }


def test_drawn_digits_are_recognised(page, site, tmp_path: Path) -> None:
    """A real test digit of every class, drawn; the label and top 3 that Python computes."""
    _, model = site
    digits, labels = load_test_digits(model.data_dir)
    for label, index in clear_examples(model.onnx, digits, labels).items():
        page.click("#clear")
        assert shown(page) == ("–", [])  # cleared: nothing to classify
        assert not preview_pixels(page).any()
        draw(page, digits[index])
        digit, top = shown(page)
        screenshot = tmp_path / f"web_example_{label}.png"
        page.screenshot(path=str(screenshot))
        assert digit == str(label), f"drew a {label}, page says {digit} ({top}); see {screenshot}"
        rgba = pad_pixels(page)
        page_top = [(int(d), float(p.rstrip("%"))) for d, p in (row.split() for row in top)]
        expected = python_top3(model.onnx, rgba, tmp_path)
        sees = np.round(preprocess_file(tmp_path / "pad.png") * 255)  # the file python_top3 saved
        assert np.abs(preview_pixels(page) - sees).max() <= 1  # the preview shows the input
        assert [d for d, _ in page_top] == [d for d, _ in expected]
        for (_, shown_percent), (_, p) in zip(page_top, expected, strict=True):
            assert abs(shown_percent - 100 * p) <= 0.051, (page_top, expected)


def test_touch_draws_and_clear_resets(page) -> None:
    """A finger tap leaves ink that gets classified; Clear empties the pad and the result."""
    page.click("#clear")
    assert shown(page) == ("–", [])
    box = page.locator("#pad").bounding_box()
    page.touchscreen.tap(box["x"] + 140, box["y"] + 140)
    digit, top = shown(page)
    assert digit in {str(d) for d in range(10)} and len(top) == 3
    assert top[0].split()[0] == digit  # the label is the most probable row
    page.click("#clear")
    assert shown(page) == ("–", [])


def test_ink_lands_under_the_pointer(page) -> None:
    """A dot made at a point of the canvas is centred on that pixel of the pad: the pad's
    border is not counted into its coordinates (it put ink up to 2 px off, towards the
    far corner)."""
    box = page.locator("#pad").bounding_box()
    border = page.evaluate("() => document.getElementById('pad').clientLeft")
    for x, y in ((30, 30), (250, 40), (140, 260)):
        page.click("#clear")
        page.mouse.move(box["x"] + border + x, box["y"] + border + y)
        page.mouse.down()
        page.mouse.up()
        ink = np.argwhere(pad_pixels(page)[..., 0] < 128)  # (row, column) of each dark pixel
        assert len(ink), (x, y)
        row, column = ink.mean(axis=0) + 0.5  # a pixel's centre
        assert abs(column - x) < 0.5 and abs(row - y) < 0.5, ((x, y), (column, row))
    page.click("#clear")


def test_offline_the_page_shows_no_feedback_control(page) -> None:
    assert page.locator("#feedback").is_hidden()


def test_a_real_server_gives_the_page_its_model_and_takes_its_feedback(
    page, site, tmp_path: Path
) -> None:
    """With ?server=URL&model=server#token=TOKEN the page loads production from a real
    `mnist-pipeline serve` (its /model.onnx, checked against X-Model-SHA256 with Web Crypto),
    classifies with it as Python does, and the 'wrong? tell us the digit' control posts the
    drawing with that bearer token, which the server holds for review; the token leaves the
    page's address at once and a reload still sends it. Altered bytes are refused."""
    origin, model = site
    project = tmp_path / "project"
    project.mkdir()
    register_layout(project / "registry", model, tmp_path / "candidate")
    token = "web+page/feedback=token+01"  # as base64 has them: '+' is no space here
    (project / "tokens").write_text(f"page {token_sha256(token)}\n")
    digits, labels = load_test_digits(model.data_dir)
    index = clear_examples(model.onnx, digits, labels)[7]
    serve = {"cors_origins": [origin], "feedback_tokens_file": "tokens"}
    with (
        mnist_server(project, tmp_path / "serve.log", **serve) as api,
        altered_model_server(model.onnx.read_bytes()) as altered,
    ):
        context = page.context.browser.new_context(viewport={"width": 900, "height": 620})
        allowed = (origin + "/", api + "/", altered + "/")
        context.route(
            "**/*",
            lambda route: (
                route.continue_() if route.request.url.startswith(allowed) else route.abort()
            ),
        )
        page = context.new_page()  # the shared page stays offline, without ?server
        page.goto(f"{origin}/examples/web/?server={api}&model=server#token={token}")
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        status = page.inner_text("#status")
        assert status.startswith(f"model {api}/model.onnx (served version 1, SHA-256 verified, "), (
            status
        )
        assert page.locator("#feedback").is_visible()
        draw(page, digits[index])
        digit, top = shown(page)
        assert digit == str(labels[index]), top
        rgba = pad_pixels(page)
        expected = python_top3(model.onnx, rgba, tmp_path)
        assert [int(row.split()[0]) for row in top] == [d for d, _ in expected]
        # The token left the address at once (history and bookmarks never hold it).
        assert page.url == f"{origin}/examples/web/?server={api}&model=server", page.url
        for label in (3, 5):  # "wrong: it is a 3", then the same drawing as a 5
            if label == 5:  # after a reload, which still sends the tab's token
                page.reload()
                page.wait_for_selector("body[data-ready=true]", timeout=60_000)
                draw(page, digits[index])
                shown(page)
            page.click(f"#labels button[data-label='{label}']")
            page.wait_for_function(
                f"() => document.getElementById('feedback-status').textContent"
                f".endsWith('as a {label}')",
                timeout=30_000,
            )
        assert page.inner_text("#feedback-status") == "thanks: sent for review as a 5"
        # The same tab pointed at another server: the token kept for the first is not sent.
        elsewhere: list[str | None] = []

        def other_feedback(route) -> None:
            elsewhere.append(route.request.headers.get("authorization"))
            route.fulfill(status=401, json={"error": "no token"})

        page.route(f"{altered}/feedback", other_feedback)
        page.goto(f"{origin}/examples/web/?server={altered}")
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        draw(page, digits[index])
        shown(page)
        page.click("#labels button[data-label='3']")
        page.wait_for_function(
            "() => document.getElementById('feedback-status').textContent.includes('no token')",
            timeout=30_000,
        )
        assert elsewhere == [None]
        refused = context.new_page()
        refused.goto(f"{origin}/examples/web/?server={altered}&model=server")
        refused.wait_for_selector("body[data-failed=true]", timeout=60_000)
        sha = hashlib.sha256(model.onnx.read_bytes()).hexdigest()
        assert refused.inner_text("#status").endswith(
            f", not {sha} as X-Model-SHA256 says; not loaded"
        )
        for where, told in (
            ("unhashed", "/unhashed/model.onnx sent no readable X-Model-SHA256 header"),
            ("cut", "the download of " + altered + "/cut/model.onnx broke off ("),
        ):
            refused = context.new_page()
            refused.goto(f"{origin}/examples/web/?server={altered}/{where}&model=server")
            refused.wait_for_selector("body[data-failed=true]", timeout=60_000)
            assert told in refused.inner_text("#status"), refused.inner_text("#status")
        context.close()
    assert inbox.entries(project / "data" / "extra") == []  # nothing reaches training unreviewed
    (item,) = pending.items(project / "data" / "pending")
    assert item.labels == [3, 5] and {c.source for c in item.claims} == {"token:page"}
    with Image.open(item.path) as stored:
        assert stored.size == (280, 280)  # the pad as drawn


def test_a_missing_model_is_a_clear_highlighted_error(page, site) -> None:
    origin, _ = site
    other = page.context.new_page()
    other.goto(f"{origin}/examples/web/?model=/models/missing.onnx")
    other.wait_for_selector("body[data-failed=true]", timeout=60_000)
    status = other.locator("#status")
    assert status.inner_text().startswith("no model at /models/missing.onnx (HTTP 404")
    assert "mnist-pipeline export" in status.inner_text()
    assert "error" in (status.get_attribute("class") or "")
    other.close()


def test_a_server_that_answers_no_model_is_told_with_its_own_words(page, site) -> None:
    """A server that is up but has no model yet answers 503 with a JSON error: the page shows
    that, not the hint for a server that is down or refuses this origin."""
    origin, _ = site
    other = page.context.new_page()
    said = {"error": "no model loaded yet: no production version in the registry"}
    other.route("**/model.onnx", functools.partial(fulfil, status=503, json=said))
    other.goto(f"{origin}/examples/web/?server=http://127.0.0.1:9&model=server")
    other.wait_for_selector("body[data-failed=true]", timeout=60_000)
    status = other.inner_text("#status")
    assert status == (
        "no model at http://127.0.0.1:9/model.onnx (HTTP 503 no model loaded yet: no "
        "production version in the registry)"
    ), status
    other.close()


def test_a_page_that_cannot_start_or_classify_says_so_highlighted(page, site) -> None:
    """A module that cannot be loaded (onnxruntime-web not installed), a ?server= that is no
    URL, or an address without its http(s) scheme (fetched as a path of this site, or not at
    all, it would read as a missing model), and a model that loads but cannot take a [1, 1, 28,
    28] drawing: each is a highlighted error, never "loading the model..." for good or the
    previous drawing's answer."""
    origin, _ = site
    runtime = "**/onnxruntime-web/dist/ort.wasm.min.mjs"
    no_scheme = "the page cannot start: Uncaught Error: ?server= must be an http(s) URL such as "
    cases = (
        ("", runtime, {"status": 404, "body": b""}, "app.mjs or a module it imports could not"),
        ("?server=http://127.0.0.1:80010&model=server", None, None, "the page cannot start: "),
        ("?server=127.0.0.1:8000&model=server", None, None, no_scheme),
        ("?server=localhost:8000", None, None, no_scheme),  # feedback only: refused as early
        ("?server=ftp://127.0.0.1/&model=server", None, None, no_scheme),
        ("?model=/models/flat.onnx", "/models/flat.onnx", {"body": flat_model()}, None),
    )
    for query, route, answer, told in cases:
        other = page.context.new_page()
        if route is not None:
            where = f"{origin}{route}" if route.startswith("/") else route
            other.route(where, functools.partial(fulfil, **answer))
        other.goto(f"{origin}/examples/web/{query}")
        if told is None:  # it loads; the first drawing fails
            other.wait_for_selector("body[data-ready=true]", timeout=60_000)
            one = np.zeros((28, 28), np.uint8)
            one[4:24, 12:16] = 255
            draw(other, one)
            told = "the model cannot classify the drawing ("
        other.wait_for_selector("body[data-failed=true]", timeout=60_000)
        status = other.locator("#status")
        assert status.inner_text().startswith(told), status.inner_text()
        assert "error" in (status.get_attribute("class") or "")
        assert other.inner_text("#digit") == "–"
        other.close()
    # A drawing that fails after one was answered: that answer goes, and the next one is shown.
    other = page.context.new_page()
    other.goto(f"{origin}/examples/web/")
    other.wait_for_selector("body[data-ready=true]", timeout=60_000)
    one = np.zeros((28, 28), np.uint8)
    one[4:24, 12:16] = 255
    draw(other, one)
    digit, top = shown(other)
    assert digit != "–" and len(top) == 3
    other.evaluate(
        "() => { const canvas = CanvasRenderingContext2D.prototype;"
        " const real = canvas.getImageData;"
        " window.restoreCanvas = () => { canvas.getImageData = real; };"
        " canvas.getImageData = () => { throw new Error('no pixels'); }; }"
    )
    draw(other, one)
    other.wait_for_selector("body[data-failed=true]", timeout=60_000)
    assert "the model cannot classify the drawing (no pixels)" in other.inner_text("#status")
    assert other.inner_text("#digit") == "–" and other.locator("#top li").count() == 0
    other.evaluate("() => window.restoreCanvas()")
    draw(other, one)
    again, top = shown(other)  # the strokes drawn over again: the same digit
    assert again == digit and len(top) == 3
    other.wait_for_selector("body:not([data-failed])", timeout=30_000)
    assert "error" not in (other.locator("#status").get_attribute("class") or "")
    other.close()


def test_the_status_names_the_model_and_its_test_accuracy(page, site) -> None:
    """Read from the ONNX file's metadata_props, which onnxruntime-web does not expose."""
    _, model = site
    meta = ort.InferenceSession(str(model.onnx)).get_modelmeta().custom_metadata_map
    accuracy = float(meta["test_accuracy"])
    status = page.inner_text("#status")
    assert status.startswith(
        f"model ../../models/model.onnx (parity checked, test accuracy {100 * accuracy:.2f}%) "
        "loaded"
    ), status


def fulfil(route, **answer: object) -> None:  # noqa: ANN001 - playwright's Route
    route.fulfill(**answer)


def test_an_export_its_parity_check_did_not_pass_is_not_loaded(page, site) -> None:
    """The repository's own models/model.onnx (no ?model=) only as reports/parity.json passed it,
    exported from the weights in models/model.pt."""
    import json

    origin, model = site
    parity = json.loads(model.parity_report.read_text())
    for route, body, told in (
        ("**/reports/parity.json", {**parity, "passed": False}, "failed its parity check"),
        ("**/reports/parity.json", {**parity, "onnx_sha256": "0" * 64}, "is not the model its"),
        ("**/models/model.pt", b"weights trained since", "exported from other weights"),
        ("**/models/model.pt", 403, "cannot be checked against ../../models/model.pt (HTTP 403)"),
        ("**/reports/parity.json", 404, "has no parity record ("),
    ):
        other = page.context.new_page()
        answer = (
            {"status": body}
            if isinstance(body, int)
            else {"body": body}
            if isinstance(body, bytes)
            else {"json": body}
        )
        other.route(route, functools.partial(fulfil, **answer))
        other.goto(f"{origin}/examples/web/")
        other.wait_for_selector("body[data-failed=true]", timeout=60_000)
        status = other.inner_text("#status")
        assert status.startswith("../../models/model.onnx") and told in status, status
        other.close()
