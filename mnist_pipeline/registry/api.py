"""`Registry`: register, list, resolve (verified), promote, roll back and verify model versions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mnist_pipeline.core.atomic import write_json
from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import Params, RegistryParams
from mnist_pipeline.registry import aliases as alias_file
from mnist_pipeline.registry import challenger, store
from mnist_pipeline.registry.aliases import PRODUCTION, AliasState, utc_now
from mnist_pipeline.registry.audit import audit
from mnist_pipeline.registry.candidate import (
    METRICS_FILE,
    ONNX_FILE,
    PARITY_FILE,
    STATE_DICT_FILE,
    TRAIN_RECORD_FILE,
    Candidate,
    check_reports,
)
from mnist_pipeline.registry.card import build_card, is_sealed, lineage
from mnist_pipeline.registry.registration import Registration
from mnist_pipeline.registry.signing import Signing


class Registry:
    """The versions of one named model under `root` (see store.py for the folder layout)."""

    def __init__(self, root: Path | str, name: str, signing: Signing | None = None) -> None:
        self.name = store.check_name(name, "model name")
        self.root = Path(root)
        self.model_dir = self.root / name
        self.signing = signing or Signing()

    @classmethod
    def from_params(cls, params: RegistryParams, layout: Layout) -> Registry:
        """The registry params.yaml configures (a relative `root` is under the project folder,
        layout.project, so every run folder shares one registry), with its signing keys."""
        signing = Signing.load(
            layout.in_project(params.signing_key) if params.signing_key else None,
            [layout.in_project(path) for path in params.trusted_keys],
            params.require_signature,
        )
        return cls(layout.registry_root(params.root), params.model_name, signing)

    # ---- reading (no lock: version folders are immutable, the alias file is replaced atomically)

    def versions(self) -> list[dict[str, Any]]:
        """The card of every version, oldest first (RegistryError on a damaged card)."""
        return [self._card(v) for v in store.list_versions(self.model_dir)]

    def catalogue(self) -> list[tuple[int, dict[str, Any] | None, str | None]]:
        """(version, card, None) for every version, or (version, None, problem) when its card
        cannot be trusted: one damaged version does not hide the others."""
        entries: list[tuple[int, dict[str, Any] | None, str | None]] = []
        for version in store.list_versions(self.model_dir):
            try:
                entries.append((version, self._card(version), None))
            except RegistryError as exc:
                entries.append((version, None, str(exc)))
        return entries

    def aliases(self) -> dict[str, int]:
        """Current alias -> version map."""
        return dict(self._state().aliases)

    def alias_log(self) -> dict[str, Any]:
        """Aliases, their history and the event log, as stored in aliases.json."""
        return self._state().to_dict()

    def card(self, ref: str | int) -> dict[str, Any]:
        """The model card of a version number ("3", "v3") or alias."""
        return self._card(self._version(ref))

    def version_with_fingerprint(self, sha256: str) -> int | None:
        """The newest intact-card version recording the inputs fingerprint `sha256`, if any."""
        for version, card, _ in reversed(self.catalogue()):
            if card is not None and (card.get("fingerprint") or {}).get("sha256") == sha256:
                return version
        return None

    def resolve(self, ref: str | int) -> Path:
        """Absolute path of a version's ONNX file, after checking its SHA-256 against the card."""
        return self._verified_file(ref, ONNX_FILE)

    def load_state_dict(self, ref: str | int) -> dict[str, Any]:
        """A version's verified PyTorch state_dict (imports torch; weights_only loading)."""
        import torch

        return torch.load(self._verified_file(ref, STATE_DICT_FILE), weights_only=True)

    def verify(self) -> list[str]:
        """Re-hash every file of every version, cross-check each card with its reports, and
        check the alias file; [] means intact (audit.py)."""
        return audit(self)

    # ---- writing (under the model's lock)

    def register(
        self,
        candidate: Candidate,
        params: Params,
        promotion_margin: float,
        *,
        skip_same_inputs: bool = False,
    ) -> Registration:
        """Store `candidate` as the next version; it becomes production if good enough.

        Nothing is stored when a version already has the same model.pt and model.onnx, or (with
        `skip_same_inputs`, as a run that was not forced asks) the same inputs fingerprint:
        decided under the lock, so runs that finish together cannot both register.
        """
        if not math.isfinite(promotion_margin) or promotion_margin < 0:
            raise RegistryError(f"promotion_margin must be >= 0, got {promotion_margin!r}")
        sources = candidate.files()
        missing = candidate.missing()
        if missing:
            raise RegistryError("candidate files not found: " + ", ".join(map(str, missing)))
        origin = lineage(candidate.workdir)
        with store.locked(self.model_dir):
            store.remove_stale(self.model_dir)
            with store.staging_folder(self.model_dir) as tmp:
                hashes = {rel: store.copy_in(src, tmp, rel) for rel, src in sources.items()}
                reports = {
                    name: store.read_json(tmp / name, f"{name} report")
                    for name in (METRICS_FILE, PARITY_FILE, TRAIN_RECORD_FILE)
                }
                _, trained = check_reports(reports, hashes, params)  # refuses a broken chain
                metrics, parity = reports[METRICS_FILE], reports[PARITY_FILE]
                fingerprint = reports[TRAIN_RECORD_FILE].get("fingerprint")
                state = self._state()
                fingerprint_sha = (fingerprint or {}).get("sha256")
                kept = self._already_held(hashes, fingerprint_sha if skip_same_inputs else None)
                if kept is not None:
                    return self._existing(state, *kept)
                existing = store.list_versions(self.model_dir)
                version = max([state.last_version, *existing], default=0) + 1
                decision = challenger.decide(  # against production, on the same images
                    self.name,
                    metrics,
                    promotion_margin,
                    state.aliases.get(PRODUCTION),
                    self._card,
                    lambda version: self._verified_file(version, ONNX_FILE),
                    candidate.extra_dir,
                    params.ingest.holdout_percent,
                )
                card = build_card(
                    name=self.name,
                    version=version,
                    created=utc_now(),
                    metrics=metrics,
                    parity=parity,
                    params=trained,
                    decision=decision,
                    origin=origin,
                    files=hashes,
                    fingerprint=fingerprint,
                )
                write_json(tmp / store.CARD_FILE, card)
                (tmp / store.CARD_FILE).chmod(0o444)
                self.signing.sign(card, tmp)
                path = store.commit(tmp, self.model_dir, version)
            state.assign(decision["alias"], version, "register", decision["reason"])
            state.last_version = version
            warning = None
            try:
                alias_file.save(self.model_dir / store.ALIASES_FILE, state)
            except OSError as exc:  # the version is committed: say so, do not report a failure
                warning = (
                    f"aliases.json could not be updated ({exc.strerror or exc}); v{version}'s "
                    f"decision ({decision['alias']}) is in its card, applies from now on, and is "
                    "written to aliases.json by the next registry change"
                )
        return Registration(
            name=self.name,
            version=version,
            alias=decision["alias"],
            reason=decision["reason"],
            aliases=tuple(state.aliases_of(version)),
            path=path,
            champion=decision["champion"],
            warning=warning,
        )

    def promote(self, version: int, alias: str) -> int | None:
        """Point `alias` at an intact `version`; returns the version it pointed at before."""
        store.check_alias(alias)
        with store.locked(self.model_dir):
            state = self._state()
            target = self._version(version, state)
            self._require_intact(target)
            previous = state.assign(alias, target, "promote", f"promoted v{target} to {alias}")
            alias_file.save(self.model_dir / store.ALIASES_FILE, state)
        return previous

    def rollback(self, alias: str = PRODUCTION) -> int:
        """Move `alias` (production) back to its previous version; returns that version."""
        store.check_alias(alias)
        with store.locked(self.model_dir):
            state = self._state()
            _, target = state.rollback(alias)
            self._require_intact(target)
            alias_file.save(self.model_dir / store.ALIASES_FILE, state)
        return target

    # ---- internals

    def _already_held(
        self, hashes: dict[str, str], fingerprint: str | None
    ) -> tuple[int, str] | None:
        """(version, why) of an intact-card version holding these weights and ONNX, or these
        inputs (when `fingerprint` is given); None if there is none."""
        same = (STATE_DICT_FILE, ONNX_FILE)
        for version, card, _ in reversed(self.catalogue()):
            if card is None:
                continue
            if all(card["files"].get(rel) == hashes[rel] for rel in same):
                return version, f"v{version} has the same model.pt and model.onnx"
            if fingerprint and (card.get("fingerprint") or {}).get("sha256") == fingerprint:
                return version, f"v{version} has the same inputs (registered meanwhile)"
        return None

    def _existing(self, state: AliasState, version: int, why: str) -> Registration:
        """The outcome of a registration that stored nothing because v`version` holds it."""
        return Registration(
            name=self.name,
            version=version,
            alias=", ".join(state.aliases_of(version)) or "no alias",
            reason=why,
            aliases=tuple(state.aliases_of(version)),
            path=self.model_dir / store.version_dir_name(version),
            champion=state.aliases.get(PRODUCTION),
            registered=False,
        )

    def _state(self) -> AliasState:
        """The alias file, plus decisions of versions committed by writers that died before it."""
        state = alias_file.load(self.model_dir / store.ALIASES_FILE)
        for version in store.list_versions(self.model_dir):
            if version <= state.last_version:
                continue
            try:
                decision = self._card(version)["decision"]
                state.assign(decision["alias"], version, "register", decision["reason"])
            except (RegistryError, KeyError, TypeError):
                pass  # an unreadable card: `verify` reports it; it gets no alias
            state.last_version = version
        return state

    def _version(self, ref: str | int, state: AliasState | None = None) -> int:
        """The version number a reference names; unknown ones list what exists."""
        versions = store.list_versions(self.model_dir)
        listed = ", ".join(map(str, versions)) or "none registered"
        match = store.REF_VERSION_RE.fullmatch(str(ref).strip())
        if match:
            version = int(match.group(1))
            if version not in versions:
                raise RegistryError(f"unknown version {ref!r} of {self.name}; versions: {listed}")
            return version
        alias = store.check_alias(str(ref).strip())
        state = state or self._state()
        if alias not in state.aliases:
            known = ", ".join(f"{a} -> v{v}" for a, v in sorted(state.aliases.items()))
            raise RegistryError(
                f"unknown alias {alias!r} of {self.name}; aliases: {known or 'none'}; "
                f"versions: {listed}"
            )
        version = state.aliases[alias]
        if version not in versions:
            raise RegistryError(f"alias {alias!r} points at v{version}, which does not exist")
        return version

    def _card(self, version: int) -> dict[str, Any]:
        folder = self.model_dir / store.version_dir_name(version)
        card = store.read_json(folder / store.CARD_FILE, f"{self.name} v{version} card")
        if not is_sealed(card) or card.get("version") != version or card.get("name") != self.name:
            raise RegistryError(
                f"{self.name} v{version}: card.json was modified after registration "
                "(its card_sha256 seal does not match); refusing to trust it"
            )
        if not isinstance(card.get("files"), dict):
            raise RegistryError(f"{self.name} v{version}: card.json has no file table")
        self.signing.check(card, folder, f"{self.name} v{version}")
        return card

    def _verified_file(self, ref: str | int, relpath: str) -> Path:
        version = self._version(ref)
        card = self._card(version)
        folder = self.model_dir / store.version_dir_name(version)
        expected = card["files"].get(relpath)
        problem = (
            "not in its card" if expected is None else store.check_file(folder, relpath, expected)
        )
        if problem:
            raise RegistryError(f"refusing to load {self.name} v{version}: {problem}")
        return (folder / relpath).resolve()

    def _require_intact(self, version: int) -> None:
        folder = self.model_dir / store.version_dir_name(version)
        problems = store.check_files(folder, self._card(version)["files"])
        if problems:
            raise RegistryError(f"{self.name} v{version} is damaged: " + "; ".join(problems))
