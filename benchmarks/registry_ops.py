"""Time registry operations on a temporary registry with tiny real ONNX candidates.

    .venv/bin/python -m benchmarks.registry_ops [--versions 50] [--state-kb 90]

Prints median milliseconds per register, read (verified bytes from the store), resolve (a
verified local copy, re-hashed on each call) and verify (all versions).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import Registry
from tests.registry_helpers import MODEL, PARAMS, make_candidate


def _ms(call) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--state-kb", type=int, default=90)  # ClassicNet's state_dict is ~90 KB
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        registry = Registry(root / "registry", MODEL)
        candidates = [
            make_candidate(root / f"c{i}", i, state_bytes=args.state_kb * 1024)
            for i in range(args.versions)
        ]
        register = [_ms(lambda c=c: register_candidate(registry, c, PARAMS)) for c in candidates]
        read = [_ms(lambda: registry.read_file("production", "model.onnx")) for _ in range(20)]
        cache = root / "cache"  # not the user's cache
        resolve = [
            _ms(lambda: registry.fetch("production", "model.onnx", cache)) for _ in range(20)
        ]
        verify = [_ms(registry.verify) for _ in range(3)]
    print(f"register: median {statistics.median(register):.1f} ms ({args.versions} versions)")
    print(f"read:     median {statistics.median(read):.2f} ms")
    print(f"resolve:  median {statistics.median(resolve):.2f} ms")
    print(f"verify:   median {statistics.median(verify):.1f} ms for {args.versions} versions")


if __name__ == "__main__":
    main()
