"""`models verify`: every file re-hashed, every card cross-checked with its stored reports."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.registry import aliases as alias_file
from mnist_pipeline.registry import store
from mnist_pipeline.registry.candidate import (
    METRICS_FILE,
    ONNX_FILE,
    PARITY_FILE,
    STATE_DICT_FILE,
    TRAIN_RECORD_FILE,
)

if TYPE_CHECKING:
    from mnist_pipeline.registry.api import Registry


def audit(registry: Registry) -> list[str]:
    """Every problem of the registry's versions and alias file; [] means intact."""
    versions = store.list_versions(registry.model_dir)
    problems = [
        f"v{v} is missing (versions must be consecutive)"
        for v in sorted(set(range(1, max(versions, default=0) + 1)) - set(versions))
    ]
    for version, card, damaged in registry.catalogue():
        if card is None:
            problems.append(str(damaged))
            continue
        folder = registry.model_dir / store.version_dir_name(version)
        damaged_files = store.check_files(folder, card["files"])
        problems += [f"v{version}: {p}" for p in damaged_files]
        if not damaged_files:  # intact files: do the card and its reports agree?
            problems += [f"v{version}: {p}" for p in chain_problems(folder, card)]
    try:
        state = alias_file.load(registry.model_dir / store.ALIASES_FILE)
    except RegistryError as exc:
        return problems + [str(exc)]
    for alias, version in sorted(state.aliases.items()):
        if version not in versions:
            problems.append(f"alias {alias!r} points at v{version}, which does not exist")
    if state.last_version > max(versions, default=0):
        problems.append(f"aliases.json records v{state.last_version}, which does not exist")
    known = {store.ALIASES_FILE, *(store.version_dir_name(v) for v in versions)}
    if registry.model_dir.is_dir():
        for entry in sorted(registry.model_dir.iterdir()):
            if not entry.name.startswith(".") and entry.name not in known:
                problems.append(f"unexpected entry in {registry.model_dir}: {entry.name}")
    return problems


def chain_problems(folder: Path, card: dict[str, Any]) -> list[str]:
    """Where a version's stored reports contradict its card (call after its files verified):
    parity must have checked the card's model.onnx, every report must describe the card's
    model.pt, and metrics must hold the card's accuracy."""
    files, problems = card["files"], []
    reports: dict[str, Any] = {}
    for name in (METRICS_FILE, PARITY_FILE, TRAIN_RECORD_FILE):
        if name in files:  # versions registered before model.json existed lack it
            try:
                reports[name] = store.read_json(folder / name, name)
            except RegistryError as exc:
                problems.append(str(exc))
    parity = reports.get(PARITY_FILE, {})
    if PARITY_FILE in reports and parity.get("onnx_sha256") != files.get(ONNX_FILE):
        problems.append(f"{PARITY_FILE} checked another {ONNX_FILE} than the card's")
    for name, report in reports.items():
        recorded = report.get("state_dict_sha256")
        if recorded is not None and recorded != files.get(STATE_DICT_FILE):
            problems.append(f"{name} describes another {STATE_DICT_FILE} than the card's")
    metrics = reports.get(METRICS_FILE, {})
    if METRICS_FILE in reports and metrics.get("accuracy") != card["metrics"].get("accuracy"):
        problems.append(
            f"the card's accuracy {card['metrics'].get('accuracy')!r} is not "
            f"{METRICS_FILE}'s {metrics.get('accuracy')!r}"
        )
    return problems
