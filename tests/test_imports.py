"""The package's modules import each other without cycles (TYPE_CHECKING-only imports aside)."""

from __future__ import annotations

import ast

from mnist_pipeline.core.imports import PACKAGE_DIR, SOURCE_ROOT, module_file


def _module_name(path) -> str:
    rel = path.relative_to(SOURCE_ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _runtime_imports(module: str) -> set[str]:
    """Package modules `module` imports at run time (top level or inside functions)."""
    path = module_file(module)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for child in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        # a relative import would be missed below (and by the DVC deps' import closure)
        assert not (isinstance(node, ast.ImportFrom) and node.level), (
            f"{path}:{node.lineno}: a relative import; write mnist_pipeline.…"
        )
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mnist_pipeline"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mnist_pipeline")}
    return {m for m in found if module_file(m) is not None and m != module}


def test_no_import_cycles() -> None:
    modules = sorted(_module_name(p) for p in PACKAGE_DIR.rglob("*.py"))
    graph = {m: _runtime_imports(m) - {"mnist_pipeline"} for m in modules}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if target.startswith(module + "."):
                continue  # a package importing its own submodule
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in modules:
        if module not in state:
            visit(module, [module])
