"""The tallies of one server's challengers, kept by (challenger version, production version it
was compared with): what GET /model's `shadow` shows and what a canary is judged on. Not
thread-safe: the challenger holds its lock around every call."""

from __future__ import annotations

from mnist_pipeline.serving.live import Tally


class Tallies(dict[tuple[int, int], Tally]):
    """Tally by (challenger version, production version); and per challenger version, the
    production version it was last compared with."""

    def __init__(self) -> None:
        super().__init__()
        self.against: dict[int, int] = {}

    def of(self, version: int, production: int, latest: bool = True) -> Tally:
        """The challenger `version`'s tally against `production` (the one it is compared with
        now, unless `latest` is False: a late label for an earlier image), made if new."""
        tally = self.get((version, production))
        if tally is None:
            tally = self[version, production] = Tally(version=version, production=production)
        if latest:
            self.against[version] = production
        return tally

    def last_against(self, version: int, otherwise: int) -> int:
        """The production version `version` was last compared with (`otherwise` if never)."""
        return self.against.get(version, otherwise)

    def judged(self, version: int, production: int) -> tuple[Tally, Tally]:
        """A canary's tallies added up, and the one against `production` (the version serving
        now; an empty one when no image was compared with it yet)."""
        mine = [tally for (v, _), tally in self.items() if v == version]
        now = self.get((version, production)) or Tally(version=version, production=production)
        return Tally.total(mine, production), now

    def shown(self, production: int | None) -> tuple[dict[str, dict], list[dict]]:
        """GET /model's `versions` (each challenger version's summary against `production`, or,
        never compared with it, against the production version it was last compared with) and
        `earlier` (the other tallies' summaries)."""
        shown = {v: production if (v, production) in self else p for v, p in self.against.items()}
        latest = {str(v): self[v, p].summary() for v, p in sorted(shown.items())}
        earlier = [t.summary() for (v, p), t in sorted(self.items()) if shown[v] != p]
        return latest, earlier
