"""The shape of the code: the folders are the layers, imports go down them (configdrive ->
partition, never back) and no two modules need each other, counting imports inside
functions (a deferred import hides a cycle from Python, not from the next reader, who
cannot understand either module alone).

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
    assert {"configdrive.cli", "configdrive.inject.steps", "partition.writing.copy"} <= set(MODULES)
    # cli imports its handlers' modules inside functions only
    assert {"configdrive.drives.builder", "configdrive.drives.reader"} <= GRAPH["configdrive.cli"]


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


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_says_its_job(module):
    """A newcomer reads the opening docstring first: it must be there and start with the
    module's one job."""
    doc = ast.get_docstring(ast.parse(MODULES[module].read_text()))
    assert doc and len(doc.split("\n\n")[0]) > 20, f"{module}: no docstring saying its job"


# The layers, bottom up, as folders (and the few modules at a package's top). A module may
# import its own folder and the folders of earlier lines, never a later line nor a neighbour
# on its own line. partition/ comes first: it knows nothing about metadata.
LAYERS = [
    "partition partition.errors partition.tools partition.progress",
    "partition.tables",                 # GPT, MBR, the config partition, filesystem probes
    "partition.images",                 # sources, decompression, formats, qcow2, checksums
    "partition.writing",                # the target by handle, the copy, O_DIRECT, rescan
    "configdrive.errors configdrive.version",
    "configdrive.files",                # by descriptor, within budget, whole or not at all
    "configdrive.documents",            # one metadata document: scan, parse, schema, lints
    "configdrive.model",                # what a drive carries, as a tree or a seed
    "configdrive.formats",              # ISO, FAT, pack: each writer beside its reader
    "configdrive.drives",               # build, open, check, extract whole drives
    "configdrive.deploy",               # the bare-metal job and the config partition
    "configdrive.engines configdrive.inject configdrive.examples",
    "configdrive.cli configdrive",      # the command; the package's public names
]
UNITS = {unit: n for n, line in enumerate(LAYERS) for unit in line.split()}


def unit_of(module: str) -> str:
    """The folder (or top-level module) of LAYERS a module belongs to."""
    parts = module.split(".")
    return ".".join(parts[:2])


def tree_units() -> set[str]:
    """What the top of each package holds: its modules and its folders (the link
    configdrive/schemas -> ../schemas holds data, not code)."""
    found = set(PACKAGES)
    for package in PACKAGES:
        for path in (ROOT / package).iterdir():
            if path.suffix == ".py" and path.name != "__init__.py":
                found.add(f"{package}.{path.stem}")
            elif (path / "__init__.py").exists() and not path.is_symlink():
                found.add(f"{package}.{path.name}")
    return found


def test_every_folder_and_top_module_has_a_layer():
    assert tree_units() == set(UNITS), (
        f"LAYERS vs the tree: missing {sorted(tree_units() - set(UNITS))}, "
        f"gone {sorted(set(UNITS) - tree_units())}")


def test_imports_never_go_up_a_layer_nor_across_one():
    wrong = sorted(f"{m} ({unit_of(m)}) imports {t} ({unit_of(t)})"
                   for m, targets in GRAPH.items() for t in targets
                   if unit_of(t) != unit_of(m) and UNITS[unit_of(t)] >= UNITS[unit_of(m)])
    assert not wrong, "; ".join(wrong)


@pytest.mark.parametrize("graph, expected", [
    ({"partition.tables.gpt": {"partition.images.image"}}, 1),     # up a layer
    ({"configdrive.inject.loop": {"configdrive.engines.testing"}}, 1),   # across one
    ({"configdrive.drives.reader": {"configdrive.formats.iso", "partition.tables.probe"}}, 0),
])
def test_the_layer_rule_finds_what_it_should(graph, expected):
    found = [t for m, targets in graph.items() for t in targets
             if unit_of(t) != unit_of(m) and UNITS[unit_of(t)] >= UNITS[unit_of(m)]]
    assert len(found) == expected


@pytest.mark.parametrize("package", PACKAGES)
def test_the_top_of_a_package_is_short(package):
    """A newcomer reads the tree first: about a dozen entries at a package's top."""
    entries = [p.name for p in (ROOT / package).iterdir() if p.name != "__pycache__"
               and not (p.is_dir() and {c.name for c in p.iterdir()} <= {"__pycache__"})]
    # (a folder left holding only bytecode, as a move leaves its old place, is not an entry)
    assert len(entries) <= 14, sorted(entries)


def documented_layout(text: str) -> set[str]:
    """The folders and top-level modules a layout block lists under configdrive/ and
    partition/ (the first word of each indented line; a line may name two, comma-joined)."""
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    listed, section = set(), None
    for line in block.splitlines():
        if line and not line.startswith(" "):
            head = line.split()[0].rstrip("/")
            section = head if head in PACKAGES else None
            if section:
                listed.add(section)
            continue
        if section is None or not line.strip():
            continue
        names = line.strip().split("  ", 1)[0]          # the names, before the description
        for word in names.replace(",", " ").split():
            if word.endswith(".py") or word.endswith("/"):
                listed.add(f"{section}.{word.removesuffix('.py').rstrip('/')}")
    return listed


@pytest.mark.parametrize("page", ["docs/ARCHITECTURE.md", "README.md"])
def test_documented_layout_matches_the_tree(page):
    listed = documented_layout((ROOT / page).read_text())
    assert listed == tree_units(), (
        f"{page} Layout vs the tree: missing {sorted(tree_units() - listed)}, "
        f"gone {sorted(listed - tree_units())}")
