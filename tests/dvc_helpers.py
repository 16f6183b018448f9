"""A throwaway git + DVC repo of the project on tiny data, and commands run in it.

The repo holds the project's dvc.yaml, params.yaml and package source, with params pointing at a
tiny synthetic mirror; PYTHONPATH makes the copied package the one that `mnist-pipeline` runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT
from tests.synthetic import make_dataset, write_mirror
from tests.test_dvc import PACKAGE


def dvc_env(repo: Path) -> dict[str, str]:
    """The environment commands in `repo` run with: its own copy of the package."""
    env = {k: v for k, v in os.environ.items() if k != "MNIST_MIRROR"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo)  # the copied package, not the editable install
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run(repo: Path, *args: str, ok: bool = True) -> str:
    """Run a command in `repo`; returns stdout+stderr (asserts success unless ok=False)."""
    done = subprocess.run(
        args, cwd=repo, env=dvc_env(repo), capture_output=True, text=True, timeout=600, check=False
    )
    output = done.stdout + done.stderr
    if ok:
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{output}"
    return output


def ran(output: str) -> set[str]:
    """Stages `dvc repro` / `dvc exp run` executed (not skipped, not restored from run-cache)."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def lock_hashes(repo: Path) -> dict[str, str]:
    """Output path -> md5 from dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text(encoding="utf-8"))
    outs = [out for stage in lock["stages"].values() for out in stage.get("outs", [])]
    return {out["path"]: out["md5"] for out in outs}


def make_project(repo: Path, mirror: Path) -> None:
    """A fresh git + DVC repo holding the project's pipeline, with params for tiny data."""
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore", ".gitignore", "data/.gitignore"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, repo / name)
    shutil.copytree(
        REPO_ROOT / PACKAGE, repo / PACKAGE, ignore=shutil.ignore_patterns("__pycache__")
    )
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    sha256 = write_mirror(mirror, make_dataset())
    params["data"].update(mirrors=[str(mirror)], sha256=sha256)
    params["train"].update(epochs=1, batch_size=32, val_size=32, num_threads=1)
    params["evaluate"].update(min_accuracy=0.0, batch_size=64)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "git", "config", "user.name", "test")
    run(repo, "git", "config", "user.email", "test@example.com")
    run(repo, "dvc", "init", "-q")
    shutil.copy2(REPO_ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copytree(REPO_ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")  # plot templates
    (repo / "plots").mkdir()  # the offline HTML template .dvc/config names, and its Vega
    shutil.copy2(REPO_ROOT / "plots" / "offline.html", repo / "plots" / "offline.html")
    if (REPO_ROOT / "plots" / "node_modules").is_dir():
        (repo / "plots" / "node_modules").symlink_to(REPO_ROOT / "plots" / "node_modules")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "project")
