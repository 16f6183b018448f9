"""`Registration`: what `Registry.register` did (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Registration:
    """Outcome of `Registry.register`: the new version, the alias it got, and why."""

    name: str
    version: int
    alias: str
    reason: str
    aliases: tuple[str, ...]
    path: Path
    champion: int | None  # the production version it was compared with (None: first version)
    warning: str | None = None  # committed, but aliases.json could not be rewritten (disk full)
    registered: bool = True  # False: an existing version already held this (see `reason`)

    def summary(self) -> str:
        if not self.registered:
            return f"nothing registered: {self.reason}"
        line = f"registered {self.name} v{self.version} as {self.alias}: {self.reason}"
        return line if self.warning is None else f"{line}\nwarning: {self.warning}"
