"""constraints.txt, the versions `make` installs, against pyproject.toml: every requirement is
pinned, to a version the requirement allows (a dependency changed without `make constraints`
fails here, not in a user's install), and so is every package they need in turn (one left out
would float to whatever is newest on the day of an install)."""

from __future__ import annotations

import tomllib
from importlib import metadata

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


def applies(requirement: Requirement, extras: set[str]) -> bool:
    """Whether `requirement` is installed with these extras on this platform."""
    marker = requirement.marker
    return marker is None or any(marker.evaluate({"extra": e}) for e in extras | {""})


def needed() -> dict[str, str]:
    """Every distribution the project needs with all its extras, directly or through others,
    as this environment's metadata says: name -> what needs it."""
    found: dict[str, str] = {}
    todo = [(r, "pyproject.toml") for r in requirements()]
    done: set[tuple[str, tuple[str, ...]]] = set()
    while todo:
        requirement, by = todo.pop()
        key = canonicalize_name(requirement.name)
        if (key, tuple(sorted(requirement.extras))) in done:
            continue
        done.add((key, tuple(sorted(requirement.extras))))
        found.setdefault(key, by)
        try:
            listed = metadata.distribution(requirement.name).requires or []
        except metadata.PackageNotFoundError:
            raise AssertionError(f"{requirement.name} (needed by {by}) is not installed") from None
        below = [Requirement(text) for text in listed]
        todo += [(r, key) for r in below if applies(r, set(requirement.extras))]
    return found


def test_every_package_needed_through_other_packages_is_pinned_too() -> None:
    # torch needs setuptools at run time, which `pip freeze` leaves out unless told
    found = needed()
    assert {"setuptools", "fastapi", "starlette", "botocore"} <= found.keys()
    unpinned = {name: by for name, by in found.items() if name not in pins()}
    assert not unpinned, f"needed but not in constraints.txt (name: needed by): {unpinned}"
