"""Which source files a module's behaviour depends on: its import closure within the package.

One truth about code dependencies: dvc.yaml lists each stage's closure as its code deps
(tests/test_dvc.py checks it), and the inputs fingerprint (training/fingerprint.py) hashes the
training stage's closure, so `dvc repro` and the Prefect flow agree on what a code edit changes.
Imports are read from the source (every `import` statement, lazy ones inside functions
included), never executed; a package's `__init__.py` counts whenever one of its modules does,
since importing the module runs it.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = "mnist_pipeline"
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # .../mnist_pipeline
SOURCE_ROOT = PACKAGE_DIR.parent


def module_file(module: str, source_root: Path = SOURCE_ROOT) -> Path | None:
    """The file of dotted `module` under `source_root` (a package's `__init__.py`), or None."""
    base = source_root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _parents(module: str) -> list[str]:
    """The packages whose `__init__` runs when `module` is imported ("a.b.c" -> a, a.b)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imports(module: str, source_root: Path) -> set[str]:
    """Package modules that `module`'s source imports by name, directly."""
    path = module_file(module, source_root)
    if path is None:
        return set()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if _ours(a.name))
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.module, node.level)
            if base is None or not _ours(base):
                continue
            found.add(base)
            for alias in node.names:  # `from pkg import submodule`
                sub = f"{base}.{alias.name}"
                if module_file(sub, source_root) is not None:
                    found.add(sub)
    return found


def _ours(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def _absolute(module: str, is_package: bool, target: str | None, level: int) -> str | None:
    """The absolute name a (possibly relative) `from ... import` refers to."""
    if level == 0:
        return target
    parts = module.split(".")
    keep = len(parts) - level + (1 if is_package else 0)
    if keep <= 0:
        return None
    base = ".".join(parts[:keep])
    return f"{base}.{target}" if target else base


def _closure(module: str, source_root: Path) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen or module_file(current, source_root) is None:
            continue
        seen.add(current)
        todo.extend(_parents(current))
        todo.extend(_imports(current, source_root))
    return seen


def import_closure(module: str, source_root: Path = SOURCE_ROOT) -> list[str]:
    """`module` and every package module it imports, directly or through others, as sorted
    POSIX paths relative to `source_root` (e.g. "mnist_pipeline/training/loop.py")."""
    files = (module_file(m, source_root) for m in _closure(module, source_root))
    return sorted(f.relative_to(source_root).as_posix() for f in files if f is not None)


def sources_sha256(relpaths: list[str], source_root: Path = SOURCE_ROOT) -> str:
    """SHA-256 over the named files (each one's relative path and content), in sorted order."""
    digest = hashlib.sha256()
    for rel in sorted(relpaths):
        digest.update(rel.encode() + b"\0")
        digest.update(hashlib.sha256((source_root / rel).read_bytes()).digest())
    return digest.hexdigest()
