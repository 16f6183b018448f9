"""`mnist-pipeline serve` under bounded load on 127.0.0.1, side by side with in-process inference.

Registers an ONNX model (random weights: the work per image does not depend on them) in a
scratch project, starts `python -m mnist_pipeline serve` on a free port, and for each
concurrency level (1, 8, 32) keeps that many keep-alive connections busy for `--seconds`
(benchmarks/http_load.py):
single-digit requests (one dark-on-light PNG of 200x170 pixels as an image/png body, and as a
multipart upload) and 64-image batches (multipart). The load generator is a small asyncio
HTTP/1.1 client (pre-built requests, no parsing beyond the status line and Content-Length), so
it takes little of the CPU it shares with the server. Prints req/s, images/s, p50/p99 latency
and errors per case, then the same images classified in this process (PNG decode, preprocess,
onnxruntime; one thread) for the HTTP overhead as a ratio, and the CPU. `--metrics both`
starts a server with `serve.metrics` on and one with it off and measures them alternately,
`--repeats` times each, printing the medians side by side; the CPU time recording one request's
metrics takes in process is printed too. `--shadow both` does the same with a server that
shadows every request with a second version (`serve.shadow: staging`) and one that does not,
and prints how many images the shadow compared and skipped. `--stack both` compares uvicorn on
uvloop + httptools (what it picks when they are installed, as they are with this project) with
a server that cannot import them (asyncio's loop and the pure-Python h11 parser).

    python -m benchmarks.bench_serve --seconds 5 [--workers 2] [--metrics both --repeats 3]
    python -m benchmarks.bench_serve --seconds 2 --shadow both --repeats 3
    python -m benchmarks.bench_serve --seconds 2 --stack both --repeats 3

It builds its model with the tests' helpers: install the dev extra (`make bench` does).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from benchmarks.arguments import positive_float, positive_int
from benchmarks.http_load import load, multipart, request
from benchmarks.machine import cpu_name
from benchmarks.scratch import clean_up_on_sigterm
from mnist_pipeline.data.preprocess import preprocess_bytes
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import Registry
from mnist_pipeline.serving.metrics import Metrics
from mnist_pipeline.serving.served_model import load_version
from tests.process_helpers import free_port
from tests.registry_helpers import MODEL, PARAMS, candidate_in, exported_candidate

REPO = Path(__file__).resolve().parents[1]
LEVELS = (1, 8, 32)
BATCH = 64
# Runs the CLI with uvloop and httptools unimportable: uvicorn's "auto" then takes asyncio + h11.
WITHOUT_FAST_STACK = (
    "import runpy, sys; sys.modules.update(uvloop=None, httptools=None); "
    "runpy.run_module('mnist_pipeline', run_name='__main__', alter_sys=True)"
)


def digit_png(seed: int) -> bytes:
    """A dark-on-light stroke 'digit' on a 200x170 canvas, as a phone photo crop might be."""
    grey = np.full((200, 170), 235, np.uint8)
    top, left = 30 + seed % 40, 50 + seed % 30
    grey[top : top + 110, left : left + 18] = 20
    grey[top : top + 18, left : left + 50] = 20
    out = io.BytesIO()
    Image.fromarray(grey).save(out, format="PNG")
    return out.getvalue()


def in_process(root: Path, pngs: list[bytes], seconds: float) -> dict[str, float]:
    """Images/s classifying the PNGs here: decode, preprocess, onnxruntime (one thread)."""
    loaded = load_version(Registry(root / "registry", MODEL), "production")
    images, ort_only = 0, []
    began = time.perf_counter()
    until = began + seconds
    while time.perf_counter() < until:
        digits = np.stack([preprocess_bytes(data, "png") for data in pngs])
        start = time.perf_counter()
        loaded.probabilities(digits)
        ort_only.append(time.perf_counter() - start)
        images += len(pngs)
    return {
        "images_per_s": images / (time.perf_counter() - began),  # the last batch ends past `until`
        "ort_images_per_s": len(pngs) / statistics.median(ort_only),
    }


def metrics_cost(probabilities: np.ndarray, repeats: int = 2000) -> float:
    """CPU microseconds that recording one answered /predict of these probabilities costs
    (serving/metrics.py, one process: values in memory)."""
    metrics = Metrics()

    def record() -> None:
        metrics.request("/predict", "POST", 200, 0.001)
        metrics.classified(1, probabilities.argmax(axis=1), probabilities.max(axis=1))

    record()
    start = time.process_time()
    for _ in range(repeats):
        record()
    return (time.process_time() - start) / repeats * 1e6


def shadow_cost(root: Path, pngs: list[bytes], repeats: int = 500) -> tuple[float, float]:
    """CPU microseconds the shadow thread spends on a 1-image and a 64-image request (the
    staging version's inference and the comparison; the response path only queues them)."""
    loaded = load_version(Registry(root / "registry", MODEL), "staging")
    digits = np.stack([preprocess_bytes(data, "png") for data in pngs])
    costs = []
    for batch, times in ((digits[:1], repeats), (digits, max(1, repeats // 10))):
        loaded.probabilities(batch)
        start = time.process_time()
        for _ in range(times):
            loaded.probabilities(batch).argmax(axis=1)
        costs.append((time.process_time() - start) / times * 1e6)
    return costs[0], costs[1]


def start_server(
    scratch: Path, workers: int, metrics: bool, shadow: bool = False, fast_stack: bool = True
) -> tuple[subprocess.Popen, int]:
    """`serve` on a free port with `serve.metrics` on or off, the staging version shadowed or
    not, on uvloop + httptools or not, once it is ready."""
    port = free_port()
    params = scratch / f"params-metrics-{metrics}-shadow-{shadow}.yaml"
    text = f"serve:\n  reload_interval_s: 5\n  metrics: {str(metrics).lower()}\n"
    params.write_text(text + ("  shadow: staging\n" if shadow else ""))
    module = ["-m", "mnist_pipeline"] if fast_stack else ["-c", WITHOUT_FAST_STACK]
    command = [sys.executable, *module, "--root", str(scratch)]
    command += ["--params", str(params), "serve", "--port", str(port), "--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = scratch / f"server-{port}.log"
    with open(log, "wb") as errors:  # the child keeps its own handle
        server = subprocess.Popen(command, env=env, stderr=errors)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return server, port
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            said = log.read_text(errors="replace").strip().splitlines()
            sys.exit(f"the server did not become ready: {said[-1] if said else 'no output'}")
        time.sleep(0.3)


def payloads(port: int, pngs: list[bytes]) -> dict[str, tuple[bytes, int]]:
    """Each case's pre-built request for the server on `port`, and its images per request."""
    return {
        "1 PNG (image/png body)": (request(port, "image/png", pngs[0]), 1),
        "1 PNG (multipart)": (request(port, *multipart(pngs[:1])), 1),
        f"{BATCH} PNGs (multipart)": (request(port, *multipart(pngs)), BATCH),
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def p99(milliseconds: float) -> str:
    """A p99 as printed: none from fewer than 100 answers (http_load gives NaN then)."""
    return f"{milliseconds:6.2f} ms" if milliseconds == milliseconds else "n/a (<100 answers)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=positive_float, default=5.0, help="per case, level and run"
    )
    parser.add_argument("--workers", type=positive_int, default=1, help="server processes")
    parser.add_argument(
        "--metrics",
        choices=("on", "off", "both"),
        default="on",
        help="serve.metrics; both: two servers measured alternately, medians side by side",
    )
    parser.add_argument(
        "--shadow",
        choices=("on", "off", "both"),
        default="off",
        help="serve.shadow: staging (a second version); both: with and without, side by side",
    )
    parser.add_argument(
        "--stack",
        choices=("fast", "pure", "both"),
        default="fast",
        help="fast: uvloop + httptools; pure: asyncio + h11; both: side by side",
    )
    parser.add_argument("--repeats", type=positive_int, default=1, help="runs per case and level")
    args = parser.parse_args()
    if args.stack != "fast" and args.workers > 1:  # spawned workers import uvicorn afresh
        parser.error("--stack pure or both needs --workers 1: workers would take uvloop again")
    if [args.metrics, args.shadow, args.stack].count("both") > 1:
        parser.error("--metrics, --shadow, --stack: only one may be both (one thing at a time)")
    clean_up_on_sigterm()  # a timeout's SIGTERM still removes the scratch folder
    scratch = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        candidate = candidate_in(exported_candidate(scratch / "candidate", 1))
        register_candidate(Registry(scratch / "registry", MODEL), candidate, PARAMS)
        if args.shadow != "off":  # a lower-accuracy second version: staging
            staging = candidate_in(exported_candidate(scratch / "staging", 0))
            register_candidate(Registry(scratch / "registry", MODEL), staging, PARAMS)
        for metrics in ("on", "off") if args.metrics == "both" else (args.metrics,):
            for shadow in ("on", "off") if args.shadow == "both" else (args.shadow,):
                for stack in ("fast", "pure") if args.stack == "both" else (args.stack,):
                    label = f"metrics {metrics}"
                    if args.shadow == "both":
                        label = f"shadow {shadow}"
                    if args.stack == "both":
                        label = f"{stack} stack"
                    on = (metrics == "on", shadow == "on", stack == "fast")
                    servers[label] = start_server(scratch, args.workers, *on)
        pngs = [digit_png(i) for i in range(BATCH)]
        cases = {label: payloads(port, pngs) for label, (_, port) in servers.items()}
        for name in next(iter(cases.values())):
            images = next(iter(cases.values()))[name][1]
            for label, (_, port) in servers.items():
                asyncio.run(load(port, cases[label][name][0], 4, 1.0))  # warm up
            for level in LEVELS:
                runs: dict[str, list[dict[str, float]]] = {label: [] for label in servers}
                for _ in range(args.repeats):  # alternately, so that noise hits both alike
                    for label, (_, port) in servers.items():
                        payload = cases[label][name][0]
                        runs[label].append(asyncio.run(load(port, payload, level, args.seconds)))
                figures = []
                for label, r in ((label, median_of(found)) for label, found in runs.items()):
                    figures.append(
                        f"{label}: {r['rps']:8.1f} req/s, {r['rps'] * images:8.1f} images/s, "
                        f"p50 {r['p50']:6.2f} ms, p99 {p99(r['p99'])}, errors {r['errors']:.0f}"
                    )
                print(f"{name}, concurrency {level:>2}: " + " | ".join(figures), flush=True)
        here = in_process(scratch, pngs, args.seconds)
        print(
            f"in process (decode + preprocess + onnxruntime, 1 thread): "
            f"{here['images_per_s']:.1f} images/s; onnxruntime alone on batches of {BATCH}: "
            f"{here['ort_images_per_s']:.1f} images/s"
        )
        probabilities = np.random.default_rng(0).dirichlet(np.ones(10), BATCH).astype(np.float32)
        print(
            f"recording metrics in process: {metrics_cost(probabilities[:1]):.1f} us CPU per "
            f"1-image request, {metrics_cost(probabilities, 200):.1f} us per {BATCH}-image one"
        )
        if args.shadow != "off":
            one, batch = shadow_cost(scratch, pngs)
            print(f"shadow in process: {one:.1f} us CPU per 1-image request, {batch:.1f} us per 64")
        for label, (_, port) in servers.items():
            shadow = httpx.get(f"http://127.0.0.1:{port}/model").json()["shadow"]
            for version, record in (shadow or {}).get("versions", {}).items():
                print(
                    f"{label}: the shadow (v{version}) compared {record['compared']} images, "
                    f"skipped {record['skipped']} (queue full)"
                )
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"server workers: {args.workers}; runs per figure: {args.repeats}; CPU: {cpu_name()}")


if __name__ == "__main__":
    main()
