"""The shape of the code: imports go one way (configdrive -> partition, never back) and no
two modules need each other, counting imports inside functions (a deferred import hides a
cycle from Python, not from the next reader, who cannot understand either module alone).

The modules are read with ast from the checkout, so that the test sees every import
statement whether or not it ever runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("configdrive", "partition")


def module_files() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of our packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = module_files()


def _known(name: str) -> str | None:
    """The longest prefix of ``name`` that is one of our modules (a name imported from a
    module is not a module itself)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Our modules that ``module`` imports anywhere in its source, at any depth."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from . import iso` names a module; `from .errors import X` names a value
            names = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in MODULES else prefix
                     for alias in node.names]
        else:
            continue
        targets.update(filter(None, map(_known, names)))
    targets.discard(module)
    return targets


GRAPH = {module: imports_of(module) for module in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm,
    iterative so that a deep chain cannot exhaust the stack)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_parser_sees_our_modules_and_imports_inside_functions():
    assert {"configdrive.cli", "configdrive.inject.steps", "partition.copy"} <= set(MODULES)
    # cli imports its handlers' modules inside functions only
    assert {"configdrive.builder", "configdrive.reader"} <= GRAPH["configdrive.cli"]


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_cycles_finds_what_it_should(graph, expected):
    assert cycles(graph) == expected


def test_no_import_cycles():
    found = cycles(GRAPH)
    described = ["; ".join(f"{m} -> {sorted(GRAPH[m] & set(component))}" for m in component)
                 for component in found]
    assert not found, "import cycles: " + " | ".join(described)


def test_partition_never_imports_configdrive():
    upward = sorted(f"{module} imports {target}" for module, targets in GRAPH.items()
                    if module.startswith("partition") for target in targets
                    if target.startswith("configdrive"))
    assert not upward, "partition/ knows nothing about metadata: " + "; ".join(upward)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_says_its_job(module):
    """A newcomer reads the opening docstring first: it must be there and start with the
    module's one job."""
    doc = ast.get_docstring(ast.parse(MODULES[module].read_text()))
    assert doc and len(doc.split("\n\n")[0]) > 20, f"{module}: no docstring saying its job"


def documented_layout() -> dict[str, set[str]]:
    """The names docs/ARCHITECTURE.md's Layout section lists under configdrive/ and partition/."""
    text = (ROOT / "docs/ARCHITECTURE.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    listed: dict[str, set[str]] = {package: set() for package in PACKAGES}
    section = None
    for line in block.splitlines():
        if line and not line.startswith(" "):
            head = line.split()[0].rstrip("/")
            section = head if head in PACKAGES else None
            continue
        if section is None:
            continue
        for word in line.replace(",", " ").split():
            if word.endswith(".py") or (word.endswith("/") and word[:-1].isidentifier()):
                listed[section].add(word.rstrip("/"))
    return listed


def test_documented_layout_matches_the_tree():
    listed = documented_layout()
    for package in PACKAGES:
        present = {p.name for p in (ROOT / package).glob("*.py") if p.name != "__init__.py"}
        present |= {p.parent.name for p in (ROOT / package).glob("*/__init__.py")
                    if not p.parent.is_symlink()}   # configdrive/schemas: a link to schemas/
        assert listed[package] == present, (
            f"docs/ARCHITECTURE.md Layout vs {package}/: missing {sorted(present - listed[package])}, "
            f"gone {sorted(listed[package] - present)}")


# docs/ARCHITECTURE.md's layers of configdrive/, bottom up: a module imports only modules
# of its own layer or an earlier one.
LAYERS = [
    "errors docscan jsondoc drivefiles version dirfd",
    "checks problems schema content",
    "layout nocloud remaster inputs",
    "iso isonames isoreader vfat fatgeometry fatnames fatreader pack",
    "drive disk reader extract output",
    "validate consumers drivecheck buildcheck pathcheck",
    "builder fetch convert placement deploy inject ironic mkisofs qemu verdict boot testing pytest_plugin examples",
    "cli",
]
LAYER_OF = {name: n for n, names in enumerate(LAYERS) for name in names.split()}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYER_OF.get(parts[1]) if parts[0] == "configdrive" and len(parts) > 1 else None


def test_every_configdrive_module_has_a_layer():
    top = {m.split(".")[1] for m in MODULES if m.startswith("configdrive.")}
    assert top == set(LAYER_OF), f"layers to update: {sorted(top ^ set(LAYER_OF))}"


def test_imports_never_go_up_a_layer():
    upward = sorted(f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
                    for m, targets in GRAPH.items() if _layer(m) is not None
                    for t in targets if _layer(t) is not None and _layer(t) > _layer(m))
    assert not upward, "; ".join(upward)
