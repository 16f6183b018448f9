"""Tiny real registry candidates, and a worker process for the crash and concurrency tests.

    python -m tests.registry_helpers ROOT CANDIDATE_DIR [--loop] [--go FILE] [--crash-at STEP]

prints "ready" once imported, waits for FILE to exist (if given), registers (forever with
--loop, with new model.pt bytes each time), and prints each new version number.
--crash-at before-commit|after-commit|aliases dies with os._exit at that point of a
registration, as a kill -9 would.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np

from mnist_pipeline.data.manifest import file_sha256
from mnist_pipeline.pipeline.candidate import Candidate
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import Registry
from mnist_pipeline.registry.local import LocalFolder
from tests.reports import MODEL, PARAMS, metrics_report, parity_report


def read_failing_for(suffix: str, error: Exception) -> Callable[[LocalFolder, str], bytes | None]:
    """LocalFolder.read, but raising `error` for every key ending in `suffix` (a store that
    fails to give one object)."""
    read = LocalFolder.read

    def flaky(self: LocalFolder, key: str) -> bytes | None:
        if key.endswith(suffix):
            raise error
        return read(self, key)

    return flaky


def make_onnx(path: Path, seed: int) -> None:
    """A real, runnable ONNX classifier: [N,1,28,28] -> Flatten -> Gemm -> [N,10] logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.normal(size=(784, 10)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.normal(size=(10,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def write_reports(
    folder: Path,
    accuracy: float = 0.99,
    passed: bool = True,
    parity_passed: bool = True,
    parity_sha: str | None = None,
    atol: float = 1e-4,
) -> None:
    """metrics.json and parity.json for the candidate in `folder`, as evaluate and parity
    write them."""
    weights = file_sha256(folder / "model.pt")
    metrics = metrics_report(accuracy, passed=passed, state_dict_sha256=weights)
    parity = parity_report(
        passed=parity_passed,
        atol=atol,
        onnx_sha256=parity_sha or file_sha256(folder / "model.onnx"),
        state_dict_sha256=weights,
    )
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "parity.json").write_text(json.dumps(parity))


def write_train_record(folder: Path, fingerprint: dict | None = None) -> None:
    """model.json as train writes it: model.pt's SHA-256 and an inputs fingerprint."""
    sections = PARAMS.to_dict()
    fingerprint = {
        "sha256": file_sha256(folder / "model.pt"),  # distinct weights: distinct inputs
        "dataset_sha256": "d" * 64,
        "extra_sha256": "none",
        "code_sha256": "c" * 64,
        "params": {"model": sections["model"], "train": sections["train"]},
    } | (fingerprint or {})
    record = {"state_dict_sha256": file_sha256(folder / "model.pt"), "fingerprint": fingerprint}
    (folder / "model.json").write_text(json.dumps(record))


def make_candidate(
    folder: Path, seed: int, state_bytes: int = 2048, fingerprint: dict | None = None, **reports
) -> Candidate:
    """A folder holding a complete candidate (distinct ONNX per seed) and its Candidate."""
    make_onnx(folder / "model.onnx", seed)
    (folder / "model.pt").write_bytes(np.random.default_rng(seed).bytes(state_bytes))
    write_train_record(folder, fingerprint)
    (folder / "plots").mkdir(exist_ok=True)
    (folder / "plots" / "confusion_matrix.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + bytes([seed % 256])
    )
    (folder / "train_history.csv").write_text("epoch,loss\n1,0.5\n")
    write_reports(folder, **reports)
    return candidate_in(folder)


def exported_candidate(
    folder: Path, seed: int, edit: Callable[[object], None] | None = None, accuracy: float = 0.0
) -> Path:
    """A contract-complete ONNX model of random weights (seed), as a registry candidate;
    `edit(model)` changes them before export, `accuracy` (else 0.9 + seed / 100) is reported."""
    import torch

    from mnist_pipeline.core.params import ExportParams
    from mnist_pipeline.export.export import export_onnx
    from mnist_pipeline.model.network import build_model
    from mnist_pipeline.model.weights import save_state_dict

    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    model = build_model("classic")
    if edit is not None:
        with torch.no_grad():
            edit(model)
    save_state_dict(model, folder / "model.pt")
    export_onnx(ExportParams(), "classic", folder / "model.pt", folder / "model.onnx", {})
    (folder / "train_history.csv").write_text("epoch,loss\n1,0.5\n")
    write_train_record(folder)
    write_reports(folder, accuracy=accuracy or 0.9 + seed / 100)
    return folder


def production_and_staging(root: Path, models: tuple[Path, Path]) -> Registry:
    """A registry at `root` of two exported candidates (`exported_candidate` seeds 1 and 2):
    v1 (models[1]) production, v2 (models[0], lower accuracy) staging."""
    registry = Registry(root, MODEL)
    register_candidate(registry, candidate_in(models[1]), PARAMS)
    register_candidate(registry, candidate_in(models[0]), PARAMS)
    return registry


def register_layout(registry_root: Path, layout, folder: Path) -> Path:
    """Register a pipeline layout's model.onnx and model.pt (with synthetic passing reports) as
    a version of MODEL; returns the candidate folder."""
    import shutil

    folder.mkdir(parents=True)
    for name in ("model.onnx", "model.pt"):
        shutil.copy(layout.model_dir / name, folder / name)
    shutil.copy(layout.train_history, folder / "train_history.csv")
    write_train_record(folder)
    write_reports(folder)
    register_candidate(Registry(registry_root, MODEL), candidate_in(folder), PARAMS)
    return folder


def registrations_held(registry: Registry) -> AbstractContextManager[None]:
    """The writers' lock `register` takes: while it is held no version can be committed, so
    runs started meanwhile all get as far as registering before any of them does."""
    return registry.storage.exclusive(f"{registry.name}/register")


# Python source for a `python -c` flow process started while a test holds registrations: its
# registration waits for the lock as long as the test holds it (the default gives up after
# 120 s, which a busy 2-core machine can exceed)
WAIT_FOR_HELD_LOCK = "import mnist_pipeline.registry.local as folder; folder.LOCK_TIMEOUT_S = 900; "


def writable(path: Path) -> Path:
    """Undo the registry's read-only mode (to tamper with a stored file in a test)."""
    os.chmod(path, 0o644)
    return path


def candidate_in(folder: Path) -> Candidate:
    return Candidate(
        onnx=folder / "model.onnx",
        state_dict=folder / "model.pt",
        train_record=folder / "model.json",
        metrics=folder / "metrics.json",
        parity=folder / "parity.json",
        plots=tuple(sorted((folder / "plots").glob("[!.]*.png"))),
        train_history=folder / "train_history.csv",
        workdir=folder,
    )


def _install_crash(step: str, backend: type) -> None:
    """Die (as kill -9 would) just before the card's creation (the commit point), just after it,
    or when the alias document is replaced, on the storage `backend` (a Storage class); or, on
    a local folder, with a blob's or the alias document's temp file written."""

    def die(*_args, **_kwargs):
        os._exit(9)

    create = backend.create

    def create_or_die(self, key: str, data: bytes) -> bool:
        if not key.endswith("/card.json"):
            return create(self, key, data)
        if step == "before-commit":
            die()
        created = create(self, key, data)
        die()
        return created

    if step in ("before-commit", "after-commit"):
        backend.create = create_or_die
    elif step == "aliases":
        backend.swap = die
    elif step == "blob-written":  # a local folder: a blob's temp file complete, not yet linked
        os.link = die
    elif step == "aliases-written":  # a local folder: the new alias document's temp file
        os.replace = die
    else:
        raise SystemExit(f"unknown crash step {step!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")  # a folder or a URL (s3://...)
    parser.add_argument("candidate", type=Path)
    parser.add_argument("--loop", action="store_true")
    parser.add_argument("--go", type=Path)
    parser.add_argument("--crash-at")
    args = parser.parse_args(argv)
    registry = Registry(args.root, MODEL)
    if args.crash_at:
        _install_crash(args.crash_at, type(registry.storage))
    candidate, params = candidate_in(args.candidate), PARAMS
    print("ready", flush=True)
    while args.go is not None and not args.go.exists():
        time.sleep(0.01)
    size = args.candidate.joinpath("model.pt").stat().st_size
    while True:
        if args.loop:  # new weights each time: one version per distinct model.pt/model.onnx
            args.candidate.joinpath("model.pt").write_bytes(os.urandom(size))
            write_train_record(args.candidate)
            write_reports(args.candidate)
        print(register_candidate(registry, candidate, params).version, flush=True)
        if not args.loop:
            return


if __name__ == "__main__":
    main(sys.argv[1:])


def key_pair(folder: Path) -> tuple[Path, Path]:
    """A new Ed25519 signing key in `folder` and its public key: (key, key.pub)."""
    from mnist_pipeline.registry.signing import generate

    pub, _ = generate(folder / "k")
    return folder / "k", pub


def model_dir(registry: Registry) -> Path:
    """The folder of a local registry's model (tests may know the local layout)."""
    return Path(registry.root) / registry.name


def stored(registry: Registry, version: int | str, relpath: str) -> Path:
    """Where a local registry keeps a version's file: its card or a content-addressed blob
    (to tamper with it in a test)."""
    folder = model_dir(registry)
    card_path = folder / f"v{version}" / "card.json"
    if relpath == "card.json":
        return card_path
    card = json.loads(card_path.read_text())
    return folder / "blobs" / "sha256" / card["files"][relpath]


def without_trail_anchors(registry: Registry) -> None:
    """Every card resealed (and signed again with the registry's key) without the alias_trail
    it names, as the registry wrote cards before they named the audit trail (to pair them with a
    log rewritten the way older releases wrote it)."""
    from mnist_pipeline.registry.card import ALIAS_TRAIL_KEY, SEAL_KEY, SIGNATURE_KEY, seal

    for version in registry.version_numbers():
        path = writable(stored(registry, version, "card.json"))
        card = json.loads(path.read_text())
        body = {
            k: v for k, v in card.items() if k not in (ALIAS_TRAIL_KEY, SEAL_KEY, SIGNATURE_KEY)
        }
        resealed = seal(body)
        signature = registry.signing.sign(resealed)
        if signature is not None:
            resealed[SIGNATURE_KEY] = signature
        path.write_text(json.dumps(resealed, indent=2) + "\n")
