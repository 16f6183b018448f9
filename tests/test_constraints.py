"""constraints.txt, the versions `make` installs, against pyproject.toml: every requirement is
pinned, to a version the requirement allows (a dependency changed without `make constraints`
fails here, not in a user's install)."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO_ROOT


def pins() -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and name.strip() == name and version, f"not `name==version`: {line!r}"
        key = canonicalize_name(name)
        assert key not in found, f"{name} pinned twice"
        found[key] = Version(version)
    return found


def requirements() -> list[Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    listed = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        listed += extra
    wanted = [Requirement(text) for text in listed]
    return [r for r in wanted if canonicalize_name(r.name) != canonicalize_name(project["name"])]


def test_every_requirement_is_pinned_to_a_version_it_allows() -> None:
    pinned = pins()
    assert len(pinned) > 100  # the whole environment, not only the direct dependencies
    checked = 0
    for requirement in requirements():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        key = canonicalize_name(requirement.name)
        assert key in pinned, f"{requirement} is not pinned in constraints.txt: make constraints"
        assert requirement.specifier.contains(pinned[key], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={pinned[key]}, which {requirement} "
            "does not allow: make constraints"
        )
        checked += 1
    assert checked >= 30
