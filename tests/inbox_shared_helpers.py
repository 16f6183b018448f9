"""What the shared-inbox tests share: a store on each backend and hosts' digits."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_pipeline.inbox import store, sync


@pytest.fixture(params=["folder", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A shared inbox on each backend."""
    if request.param == "folder":
        (tmp_path / "store").mkdir()
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_url").replace("/registry", "/inbox")


def digit(tmp_path: Path, seed: int) -> bytes:
    from tests.example_helpers import draw_digit  # it imports conftest, which imports this

    return draw_digit(tmp_path / f"digit-{seed}.png", seed).read_bytes()


def labels(inbox: Path) -> list[tuple[int, str]]:
    return [(e.label, e.sha256) for e in store.entries(inbox)]


def nothing_changed(result: sync.SyncResult) -> bool:
    return result == sync.SyncResult()
