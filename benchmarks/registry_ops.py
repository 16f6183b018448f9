"""Time registry operations on a folder and on S3 side by side, with tiny real ONNX candidates.

    .venv/bin/python -m benchmarks.registry_ops [--versions 50] [--state-kb 90] [--backend both]

Prints median milliseconds per register, read (verified bytes from the store), resolve (a
verified local copy, re-hashed on each call), verify (all versions) and one read of a 1 KB
object (the cost of one request) for each backend, and the S3/folder ratio. The S3 endpoint is
moto's standalone server (`moto_server`, the dev extra) in its own process on 127.0.0.1: a
loopback store, so the ratio measures the protocol (requests, 304s, listings), not a network.
`--latency-ms L` puts a proxy in front of it that holds every packet L/2 ms each way, as a store
one round trip of L ms away would (a region away: 10-80 ms); then requests in sequence cost L
each and requests sent at once cost L together.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from urllib.parse import urlparse

from benchmarks.arguments import non_negative_float, positive_int
from benchmarks.machine import cpu_name
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import Registry
from tests.registry_helpers import MODEL, PARAMS, make_candidate
from tests.s3_helpers import CREDENTIALS, new_bucket

OPS = ("register", "read", "resolve", "verify", "one GET")


def _ms(call) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


@contextmanager
def moto_process() -> Iterator[str]:
    """`moto_server` in its own process on a free port; yields the endpoint URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def cancel_all() -> None:
    """Cancel every other task of the running loop and wait for them to end."""
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@contextmanager
def delayed(endpoint: str, latency_s: float) -> Iterator[str]:
    """A TCP proxy in front of `endpoint` on 127.0.0.1 that forwards every chunk latency_s / 2
    after it arrived, in each direction (in order, without holding back what follows)."""
    target = urlparse(endpoint)
    loop = asyncio.new_event_loop()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def send() -> None:
            while (item := await queue.get()) is not None:
                await asyncio.sleep(max(0.0, item[0] - loop.time()))
                writer.write(item[1])
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(send())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + latency_s / 2, data))
        finally:
            queue.put_nowait(None)
            await sender

    async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await asyncio.open_connection(target.hostname, target.port)
        both = pipe(reader, upstream[1]), pipe(upstream[0], writer)
        try:
            await asyncio.gather(*both, return_exceptions=True)
        except asyncio.CancelledError:  # the proxy stops: end quietly (asyncio would log it)
            writer.close()
            upstream[1].close()

    server = loop.run_until_complete(asyncio.start_server(connect, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        server.close()
        loop.run_until_complete(cancel_all())
        loop.close()


def proxied(endpoint: str, latency_s: float) -> AbstractContextManager[str]:
    """`endpoint` itself without latency; else the delaying proxy in front of it."""
    return delayed(endpoint, latency_s) if latency_s > 0 else nullcontext(endpoint)


def measure(location: str, root: Path, candidates: list, cache: Path) -> dict[str, float]:
    """Median ms of each operation on a new registry at `location`."""
    registry = Registry(location, MODEL)
    register = [_ms(lambda c=c: register_candidate(registry, c, PARAMS)) for c in candidates]
    read = [_ms(lambda: registry.read_file("production", "model.onnx")) for _ in range(20)]
    resolve = [_ms(lambda: registry.fetch("production", "model.onnx", cache)) for _ in range(20)]
    verify = [_ms(registry.verify) for _ in range(3)]
    storage = registry.storage
    storage.create("probe/object", b"x" * 1024)
    get = [_ms(lambda: storage.read("probe/object")) for _ in range(50)]
    timings = (register, read, resolve, verify, get)
    return {op: statistics.median(v) for op, v in zip(OPS, timings, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--versions", type=positive_int, default=50)
    parser.add_argument(
        "--state-kb", type=positive_int, default=90
    )  # ClassicNet's state_dict is ~90 KB
    parser.add_argument("--backend", choices=("both", "local", "s3"), default="both")
    parser.add_argument(
        "--latency-ms", type=non_negative_float, default=0.0, help="round trip to the store"
    )
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        candidates = [
            make_candidate(root / f"c{i}", i, state_bytes=args.state_kb * 1024)
            for i in range(args.versions)
        ]
        if args.backend in ("both", "local"):
            results["folder"] = measure(str(root / "registry"), root, candidates, root / "c-l")
        if args.backend in ("both", "s3"):
            with moto_process() as endpoint, proxied(endpoint, args.latency_ms / 1000) as via:
                os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=via)
                url = f"s3://{new_bucket(via)}/registry"
                results["s3 (moto)"] = measure(url, root, candidates, root / "c-s")
    names = list(results)
    print(f"{'op':<10}" + "".join(f"{n:>14}" for n in names) + ("   s3/folder" * (len(names) > 1)))
    for op in OPS:
        row = "".join(f"{results[n][op]:>11.2f} ms" for n in names)
        ratio = (
            f"   {results[names[1]][op] / results[names[0]][op]:8.1f}x" if len(names) > 1 else ""
        )
        print(f"{op:<10}{row}{ratio}")
    print(
        f"({args.versions} versions; register and verify over all of them, medians; "
        f"round trip to the store +{args.latency_ms:g} ms)"
    )


if __name__ == "__main__":
    main()
