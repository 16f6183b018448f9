"""Count the requests one registration sends to an S3 registry, and time it.

    .venv/bin/python -m benchmarks.registry_requests [--versions 12] [--latency-ms 20] [--runs 5]

Each run registers `--versions` tiny candidates into a fresh bucket on moto's server (behind
the delaying proxy of registry_ops.py, one `--latency-ms` round trip away), then opens a new
registry object, as a pipeline's register stage (one process per registration) does, and
registers one more: its requests are counted (and with `--show` printed in the order sent:
milliseconds since it started, method, key), and the registration is timed. Medians over
`--runs`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from benchmarks.arguments import positive_float, positive_int
from benchmarks.machine import cpu_name
from benchmarks.registry_ops import moto_process, proxied
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import Registry
from tests.registry_helpers import MODEL, PARAMS, make_candidate
from tests.s3_helpers import CREDENTIALS, new_bucket


def one_run(root: Path, versions: int, latency_s: float) -> tuple[list[str], float]:
    """The requests of registering version `versions` + 1 from a new registry object, and
    its wall seconds."""
    candidates = [make_candidate(root / f"c{i}", i) for i in range(versions + 1)]
    sent: list[str] = []
    with moto_process() as endpoint, proxied(endpoint, latency_s) as via:
        os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=via)
        url = f"s3://{new_bucket(via)}/registry"
        earlier = Registry(url, MODEL)
        for candidate in candidates[:-1]:
            register_candidate(earlier, candidate, PARAMS)
        registry = Registry(url, MODEL)
        start = time.perf_counter()

        def note(request, **_: object) -> None:
            where = urlparse(request.url)
            key = unquote(where.path).split("/registry/", 1)[-1] + (
                f"?{where.query}" * bool(where.query)
            )
            sent.append(f"{(time.perf_counter() - start) * 1000:8.1f} {request.method:<6} {key}")

        registry.storage.client.meta.events.register("before-send", note)
        register_candidate(registry, candidates[-1], PARAMS)
        return sent, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--versions", type=positive_int, default=12, help="registered before the one timed"
    )
    parser.add_argument("--latency-ms", type=positive_float, default=20.0, help="round trip")
    parser.add_argument("--runs", type=positive_int, default=5)
    parser.add_argument("--show", action="store_true", help="print each request of the last run")
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores")
    counts, times = [], []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            sent, seconds = one_run(Path(tmp), args.versions, args.latency_ms / 1000)
        counts.append(len(sent))
        times.append(seconds * 1000)
        print(f"run {run + 1}: {len(sent)} requests, {seconds * 1000:.0f} ms", flush=True)
    if args.show:
        print("\n".join(sent))
    print(
        f"registering v{args.versions + 1} from a new registry object: median "
        f"{statistics.median(counts):.0f} requests, {statistics.median(times):.0f} ms "
        f"(round trip to the store +{args.latency_ms:g} ms)"
    )


if __name__ == "__main__":
    main()
