"""The package's layering: every import in ``diffrl/`` (at module level or inside a function) points to the same
layer or one below it, and no module imports itself back through others."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "diffrl"
# Bottom to top; a module may import its own layer and the layers before it.
LAYERS = (("diffrl.diffusion", "diffrl.nets", "diffrl.config", "diffrl.spaces", "diffrl.locking", "diffrl.files"),
          ("diffrl.envs",), ("diffrl.data",), ("diffrl.agents",), ("diffrl.train",), ("diffrl.eval",),
          ("diffrl.experts",), ("diffrl.demo", "diffrl.cli"))


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int | None:
    for level, packages in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in packages):
            return level
    return None


def imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
            found.add(node.module)
    return {name for name in found if name.startswith("diffrl.")}


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str) -> str | None:
    """The module an imported name lives in (``diffrl.agents.Diffuser`` -> ``diffrl.agents``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


GRAPH = {module: {m for m in map(resolve, imports(path)) if m and m != module} for module, path in MODULES.items()}


def test_every_module_belongs_to_a_layer():
    assert [m for m in MODULES if m != "diffrl" and layer(m) is None] == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "diffrl"))
def test_imports_point_down(module):
    upward = [f"{module} -> {target}" for target in sorted(GRAPH[module])
              if target != "diffrl" and layer(target) > layer(module)]
    assert upward == []


def test_no_import_cycles():
    state, cycles = {}, []

    def visit(module, stack):
        state[module] = "open"
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_every_subpackage_is_installed():
    """pyproject.toml lists the packages explicitly (configs/ and benchmarks/ install as diffrl.configs and
    diffrl.benchmarks), so a new subpackage of diffrl/ must be added there or a non-editable install lacks it."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {module_name(p.parent / "__init__.py") for p in PACKAGE.rglob("__init__.py")}
    assert folders - listed == set()
