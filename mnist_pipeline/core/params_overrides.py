"""Where params.yaml's dotted overrides (`-S train.epochs=3`, a flow's `overrides`) and the keys
of older layouts meet the raw YAML data, before it is validated (core/params.py)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from mnist_pipeline.core.errors import ParamsError
from mnist_pipeline.core.validators import problems

# Keys that moved between sections: an old params.yaml gets told where each one went.
MOVED_KEYS = {
    "train.arch": "model.arch",
    "export.parity_atol": "parity.atol",
    "export.parity_batch_sizes": "parity.batch_sizes",
}


def check_moved(raw: dict[str, Any], source: str) -> None:
    """Refuse keys of an older params.yaml layout, naming where each one lives now."""
    moved = []
    for old, new in MOVED_KEYS.items():
        section, key = old.split(".")
        if isinstance(raw.get(section), dict) and key in raw[section]:
            moved.append(f"{source}: {old}: moved to {new} (the '{new.split('.')[0]}:' section)")
    if moved:
        raise ParamsError(problems(moved))


def apply_overrides(
    raw: dict[str, Any], overrides: Mapping[str, Any], source: str, sections: Collection[str]
) -> None:
    """Set each dotted key (`section.key`, or deeper: `train.augment.rotate_deg`) in `raw`
    (read from `source`; its top-level `sections` are the known ones). Two keys of which one
    holds the other would set it in either order."""
    for outer in overrides:
        inner = next((k for k in overrides if k.startswith(f"{outer}.")), None)
        if inner is not None:
            raise ParamsError(f"overrides {outer!r} and {inner!r} overlap: set {inner!r} once")
    for dotted, value in overrides.items():
        *path, key = parts = dotted.split(".")
        if len(parts) < 2 or not all(parts):
            raise ParamsError(f"override {dotted!r}: expected 'section.key' (or deeper)")
        if dotted in MOVED_KEYS:
            raise ParamsError(f"override {dotted!r}: moved to {MOVED_KEYS[dotted]}")
        if parts[0] not in sections:
            raise ParamsError(f"override {dotted!r}: unknown section {parts[0]!r}")
        target = raw
        for depth, name in enumerate(path, 1):
            target = target.setdefault(name, {})
            if not isinstance(target, dict):
                raise ParamsError(
                    f"{source}: {'.'.join(parts[:depth])}: expected a mapping of keys (got "
                    f"{target!r}), so override {dotted!r} cannot be set"
                )
        target[key] = value
