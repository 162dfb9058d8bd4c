"""The package's layering: no import cycle, and imports at module top except for optional dependencies."""

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "src" / "mosaicbert"
# Imported inside functions on purpose: optional, or heavy and needed by one rarely used path.
LOCAL_IMPORTS_ALLOWED = {"datasets", "matplotlib", "wandb", "flash_attn"}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, node: ast.AST) -> list[str]:
    """The package modules an import statement of module ``name`` loads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "mosaicbert"]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        package = name.split(".") if MODULES[name].name == "__init__.py" else name.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base.split(".")[0] != "mosaicbert":
        return []
    # `from pkg import sub` loads the submodule when `sub` is one; otherwise only `pkg`.
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = {target for node in ast.walk(tree) for target in imported_modules(name, node)
                       if target != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of modules (first repeated at the end), or []."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_finds_a_cycle_of_three():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_relative_imports_resolve_to_the_modules_they_load():
    graph = import_graph()
    assert "mosaicbert.registry" in graph["mosaicbert.training.builders"]  # from .. import registry
    assert "mosaicbert.data.text_dataset" in graph["mosaicbert.components"]  # from .data import text_dataset
    assert "mosaicbert.families" in graph["mosaicbert.finetune.encoder"]  # from ..families import ...


def test_imports_sit_at_module_top_except_optional_dependencies():
    local = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    roots = {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom):
                    roots = {"mosaicbert"} if node.level else {(node.module or "").split(".")[0]}
                else:
                    continue
                local += [f"{name}:{node.lineno} imports {root}" for root in roots - LOCAL_IMPORTS_ALLOWED]
    assert not local, "imports inside functions: " + "; ".join(local)


def test_the_registry_only_declares_and_every_table_is_filled_by_its_package():
    registry = importlib.import_module("mosaicbert.registry")
    assert import_graph()["mosaicbert.registry"] <= {"mosaicbert.errors", "mosaicbert.validation"}
    importlib.import_module("mosaicbert.components")
    assert registry.MODELS.names() == ["hf_bert", "mosaic_bert"]
    assert registry.DATALOADERS.names() == ["text"]
    assert "decoupled_adamw" in registry.OPTIMIZERS.names() and "time_budget" in registry.CALLBACKS.names()


@pytest.mark.parametrize("module", ["mosaicbert.model", "mosaicbert.families"])
def test_the_model_package_imports_neither_composer_nor_streaming(module):
    """An exported model runs with transformers alone: model/ (and the family facts that export reads) must
    not pull in Composer or streaming."""
    code = (f"import sys, {module}; bad = [m for m in ('composer', 'streaming') if m in sys.modules]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"{module} imports {result.stdout.strip()}{result.stderr[-2000:]}"
