"""Inference speed: onnxruntime on the exported graph vs PyTorch eager on the same weights.

Both sides compute the same thing: normalisation, ClassicNet, softmax (export.InferenceModel in
torch; the exported ONNX graph in onnxruntime), on random [0, 1] float32 images (the cost does
not depend on pixel values). Measured side by side, alternating per repeat:

- batch-1 latency, one thread each (ORT intra_op_num_threads=1, torch.set_num_threads(1)):
  p50 and p99 of `--calls` single-image calls after a warm-up;
- batch-256 throughput, two threads each: images/s over `--batches` batches.

Medians over `--repeats` are printed with the ORT/torch ratios and the targets
(ORT batch-1 p50 <= 60 us, >= 3x faster than eager, >= 50k images/s at batch 256).
Weights: models/model.pt when present (or --state-dict), else an untrained ClassicNet (seed 0);
the speed is the same either way.

    .venv/bin/python -m benchmarks.bench_inference
    .venv/bin/python -m benchmarks.bench_inference --repeats 7 --calls 5000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from benchmarks.arguments import existing_file, positive_int
from benchmarks.machine import cpu_name
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import ExportParams
from mnist_pipeline.export.export import InferenceModel, export_onnx
from mnist_pipeline.model.network import ARCHITECTURES, build_model
from mnist_pipeline.model.weights import load_model, save_state_dict

THROUGHPUT_BATCH = 256


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def latencies_us(call: Callable[[], object], calls: int) -> list[float]:
    for _ in range(max(50, calls // 10)):
        call()
    out = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        call()
        out.append((time.perf_counter_ns() - start) / 1000)
    return out


def images_per_s(call: Callable[[], object], batches: int) -> float:
    for _ in range(3):
        call()
    start = time.perf_counter()
    for _ in range(batches):
        call()
    return batches * THROUGHPUT_BATCH / (time.perf_counter() - start)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--state-dict", type=existing_file, help="weights (default: models/model.pt if present)"
    )
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="classic")
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--calls", type=positive_int, default=3000, help="batch-1 calls per repeat")
    parser.add_argument(
        "--batches", type=positive_int, default=40, help="batch-256 batches per repeat"
    )
    args = parser.parse_args()
    if args.state_dict is None:  # the pipeline's weights when there are some, else untrained
        args.state_dict = Layout().state_dict

    with tempfile.TemporaryDirectory() as tmp:
        weights = args.state_dict
        if not weights.is_file():
            torch.manual_seed(0)
            weights = Path(tmp) / "untrained.pt"
            save_state_dict(build_model(args.arch), weights)
        onnx_path = export_onnx(ExportParams(), args.arch, weights, Path(tmp) / "m.onnx", {})
        onnx_path = onnx_path.onnx_path
        model = InferenceModel(load_model(args.arch, weights)).eval()
        sessions = {1: ort_session(onnx_path, 1), 2: ort_session(onnx_path, 2)}
        rng = np.random.default_rng(0)
        one = rng.uniform(0, 1, (1, 1, 28, 28)).astype(np.float32)
        many = rng.uniform(0, 1, (THROUGHPUT_BATCH, 1, 28, 28)).astype(np.float32)
        one_t, many_t = torch.from_numpy(one), torch.from_numpy(many)

        results: dict[str, list[float]] = {}

        def record(key: str, value: float) -> None:
            results.setdefault(key, []).append(value)

        with torch.inference_mode():
            for _ in range(args.repeats):
                torch.set_num_threads(1)
                ort_lat = latencies_us(lambda: sessions[1].run(None, {"image": one}), args.calls)
                torch_lat = latencies_us(lambda: model(one_t), args.calls)
                torch.set_num_threads(2)
                ort_tp = images_per_s(lambda: sessions[2].run(None, {"image": many}), args.batches)
                torch_tp = images_per_s(lambda: model(many_t), args.batches)
                record("ort_p50", percentile(ort_lat, 50))
                record("ort_p99", percentile(ort_lat, 99))
                record("torch_p50", percentile(torch_lat, 50))
                record("torch_p99", percentile(torch_lat, 99))
                record("ort_tp", ort_tp)
                record("torch_tp", torch_tp)

    med = {key: statistics.median(values) for key, values in results.items()}
    print(f"CPU: {cpu_name()}")
    print(
        f"weights: {args.state_dict if args.state_dict.is_file() else 'untrained (seed 0)'}; "
        f"onnxruntime {ort.__version__}, torch {torch.__version__}; medians of {args.repeats} "
        f"repeats ({args.calls} batch-1 calls, {args.batches} x {THROUGHPUT_BATCH} images each)"
    )
    print(f"{'':28}{'onnxruntime':>14}{'torch eager':>14}{'ratio':>9}")
    print(
        f"{'batch-1 p50 (us, 1 thread)':28}{med['ort_p50']:>14.1f}{med['torch_p50']:>14.1f}"
        f"{med['torch_p50'] / med['ort_p50']:>8.1f}x"
    )
    print(
        f"{'batch-1 p99 (us, 1 thread)':28}{med['ort_p99']:>14.1f}{med['torch_p99']:>14.1f}"
        f"{med['torch_p99'] / med['ort_p99']:>8.1f}x"
    )
    print(
        f"{'batch-256 img/s (2 threads)':28}{med['ort_tp']:>14,.0f}{med['torch_tp']:>14,.0f}"
        f"{med['ort_tp'] / med['torch_tp']:>8.1f}x"
    )
    targets = [
        ("ORT batch-1 p50 <= 60 us", med["ort_p50"] <= 60),
        ("ORT >= 3x faster than eager at batch 1", med["torch_p50"] >= 3 * med["ort_p50"]),
        ("ORT >= 50,000 images/s at batch 256", med["ort_tp"] >= 50_000),
    ]
    for name, met in targets:
        print(f"target {name}: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
