"""A small asyncio HTTP/1.1 load generator for bench_serve.py: pre-built POST requests on
keep-alive connections to 127.0.0.1, no parsing beyond the status line and Content-Length, so
it takes little of the CPU it shares with the server it measures."""

from __future__ import annotations

import asyncio
import math
import time
import uuid


def request(port: int, content_type: str, body: bytes) -> bytes:
    """The bytes of one `POST /predict?top=1` carrying `body`."""
    head = (
        f"POST /predict?top=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def multipart(files: list[bytes]) -> tuple[str, bytes]:
    """(Content-Type, body) of a multipart upload of `files` as PNGs named `files`."""
    boundary = uuid.uuid4().hex
    parts = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="d{i}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
        for i, data in enumerate(files)
    )
    return f"multipart/form-data; boundary={boundary}", parts + f"--{boundary}--\r\n".encode()


async def connection(
    port: int, payload: bytes, until: float, latencies: list, answered: list, errors: list
):
    """Send `payload` on one connection until `until`: the latency of every 200 to a request
    sent by then (also one answered after it, so that slow answers are not left out of the
    percentiles), a mark in `answered` for each 200 that came by `until` (what req/s counts:
    the one in flight at `until` would add `concurrency / seconds` req/s), and the status of
    every answer that was not a 200."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            start = time.perf_counter()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            end = time.perf_counter()
            if status != 200:
                errors.append(status)
                continue
            latencies.append(end - start)
            if end <= until:
                answered.append(1)
    finally:
        writer.close()


def percentile(ordered: list[float], share: float) -> float:
    """The nearest-rank percentile of sorted `ordered` (NaN when empty)."""
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


async def load(port: int, payload: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    """`concurrency` connections for `seconds`: 200s answered by then per second, the p50 and
    p99 (ms; p99 only from 100 answers on, else NaN) of every 200 to a request sent by then,
    and the number of other answers."""
    latencies: list[float] = []
    answered: list[int] = []
    errors: list[int] = []
    until = time.perf_counter() + seconds
    await asyncio.gather(
        *(connection(port, payload, until, latencies, answered, errors) for _ in range(concurrency))
    )
    ordered = sorted(latencies)
    return {
        "rps": len(answered) / seconds,
        "p50": percentile(ordered, 0.5) * 1000,
        "p99": percentile(ordered, 0.99) * 1000 if len(ordered) >= 100 else float("nan"),
        "errors": len(errors),
    }
