"""examples/js/preprocess.mjs, the JavaScript port, against data/preprocess.py: the same bits.

Needs only the `node` binary (the port has no dependencies); skipped without it (fails in CI).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mnist_pipeline.data.preprocess import ImageError, load_grey, to_mnist
from tests.conftest import REPO_ROOT, unavailable


@pytest.fixture(scope="module", autouse=True)
def _node_ready() -> None:
    if shutil.which("node") is None:
        unavailable("node is not installed (needed for the examples/ tests)")


MODULE = (REPO_ROOT / "examples" / "js" / "preprocess.mjs").as_uri()


def run_js(body: str, payload: Any) -> Any:
    """Run `body` (async JS using `P`, the module, and `cases`, the payload); return its value."""
    script = (
        "import { readFileSync } from 'node:fs';"
        "const P = await import(process.argv[1]);"
        "const cases = JSON.parse(readFileSync(0, 'utf8'));"
        f"const out = await (async () => {{ {body} }})();"
        "process.stdout.write(JSON.stringify(out));"
    )
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script, MODULE],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_resize_matches_pillow_bilinear() -> None:
    """Down- and upscales, one axis or both, both pass orders of Pillow 13."""
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(250):
        h, w = (int(v) for v in rng.integers(1, 70, size=2))
        mh, mw = (int(v) for v in rng.integers(1, 35, size=2))
        if rng.random() < 0.2:
            mh = h if rng.random() < 0.5 else mh
            mw = w if mh != h else mw
        cases.append({"h": h, "w": w, "mh": mh, "mw": mw, "data": rng.random(h * w).tolist()})
    out = run_js(
        "return cases.map(({h, w, mh, mw, data}) => Array.from(P.resizeBilinear("
        "{data: Float32Array.from(data), width: w, height: h}, mw, mh).data));",
        cases,
    )
    for case, js in zip(cases, out, strict=True):
        image = Image.fromarray(np.array(case["data"], np.float32).reshape(case["h"], case["w"]))
        pil = np.asarray(image.resize((case["mw"], case["mh"]), Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(np.array(js, np.float32), pil.ravel(), err_msg=str(case)[:80])


def _random_scene(rng: np.random.Generator) -> np.ndarray:
    """A float32 greyscale image with a few strokes, with mild or strong noise (the
    noise-adaptive threshold and despeckling): dark ink on light or dim paper, or light ink on
    dark or grey paper (polarity from where the values reach, not from the paper's brightness)."""
    h, w = (int(v) for v in rng.integers(3, 90, size=2))
    background, stroke = [(0.85, 0.05), (0.35, 0.05), (0.1, 0.95), (0.6, 0.95)][rng.integers(4)]
    sigma = 0.03 if rng.random() < 0.5 else rng.uniform(0.05, 0.15)  # raises the threshold
    grey = np.full((h, w), background) + rng.normal(0, sigma, (h, w))
    for _ in range(int(rng.integers(1, 4))):
        r0, r1 = sorted(rng.integers(0, h, size=2))
        c0, c1 = sorted(rng.integers(0, w, size=2))
        grey[r0 : r1 + 1, c0 : c1 + 1] = stroke
    for _ in range(int(rng.integers(0, 4))):  # glints and hot pixels of the other polarity
        grey[rng.integers(h), rng.integers(w)] = 1.0 if stroke < background else 0.0
    return grey.clip(0, 1).astype(np.float32)


def test_to_mnist_matches_python() -> None:
    """Polarity, contrast, noise threshold, despeckle, crop, fit and centring: equal float32
    results or errors."""
    rng = np.random.default_rng(1)
    scenes = [_random_scene(rng) for _ in range(150)]
    scenes += [np.full((5, 5), 0.5, np.float32), np.eye(1, 9, 4, dtype=np.float32)]
    cases = [{"h": s.shape[0], "w": s.shape[1], "data": s.ravel().tolist()} for s in scenes]
    out = run_js(
        "return cases.map(({h, w, data}) => {"
        "  const grey = {data: Float32Array.from(data), width: w, height: h};"
        "  try { return Array.from(P.toMnist(grey)); }"
        "  catch (e) { if (e instanceof P.ImageError) return e.message; throw e; } });",
        cases,
    )
    errors = 0
    for scene, js in zip(scenes, out, strict=True):
        try:
            expected = to_mnist(scene)
        except ImageError as exc:
            assert js == str(exc)
            errors += 1
            continue
        np.testing.assert_array_equal(np.array(js, np.float32).reshape(28, 28), expected)
    assert 1 <= errors < len(scenes) // 2  # the blank cases were exercised, and not only those


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "L"])
def test_greyscale_conversion_matches_python(mode: str, tmp_path: Path) -> None:
    """Step 2 for 8-bit pixels: luma weights in float32, alpha composited over white."""
    rng = np.random.default_rng(2)
    channels = {"RGBA": 4, "RGB": 3, "L": 1}[mode]
    pixels = rng.integers(0, 256, (13, 17, channels), dtype=np.uint8)
    path = tmp_path / "image.png"
    Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode).save(path)
    rgba = np.concatenate(
        [
            np.repeat(pixels, 3, -1) if mode == "L" else pixels[..., :3],
            pixels[..., 3:] if mode == "RGBA" else np.full((13, 17, 1), 255),
        ],
        -1,
    )
    call = (
        "P.greyFromLuminance(c.data.filter((_, i) => i % 4 === 0), 17, 13)"
        if mode == "L"
        else f"P.greyFromRGBA(c.data, 17, 13, {str(mode == 'RGBA').lower()})"
    )
    out = run_js(
        f"return cases.map((c) => Array.from({call}.data));", [{"data": rgba.ravel().tolist()}]
    )
    np.testing.assert_array_equal(np.array(out[0], np.float32).reshape(13, 17), load_grey(path))


def test_light_ink_on_a_transparent_sheet_matches_python(tmp_path: Path) -> None:
    """Step 2's fallback: white strokes on clear pixels vanish on white, so over black."""
    rng = np.random.default_rng(3)
    alpha = np.zeros((13, 17), np.uint8)
    alpha[3:10, 5:8] = rng.integers(100, 256, (7, 3))  # a stroke with anti-aliased edges
    cases = {"white": 255, "pale grey": 180}  # the grey one is visible on white: not switched
    images = []
    for name, level in cases.items():
        rgba = np.dstack([np.full((13, 17, 3), level, np.uint8), alpha])
        Image.fromarray(rgba, "RGBA").save(tmp_path / f"{name}.png")
        images.append({"data": rgba.ravel().tolist()})
    out = run_js(
        "return cases.map((c) => Array.from(P.greyFromRGBA(c.data, 17, 13).data));", images
    )
    for name, js in zip(cases, out, strict=True):
        py = load_grey(tmp_path / f"{name}.png")
        np.testing.assert_array_equal(np.array(js, np.float32).reshape(13, 17), py, err_msg=name)
    assert load_grey(tmp_path / "white.png")[5, 6] > 0.3  # the stroke shows, over black
    assert load_grey(tmp_path / "pale grey.png")[0, 0] == 1.0  # over white: the paper is white
