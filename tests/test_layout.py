"""The layout rules of docs/architecture.md, checked: no import cycle in topo/, and
nothing outside a backend's package knows the backend's mechanism."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import networkx as nx

TOPO = Path(__file__).resolve().parent.parent / "topo"


def _module(path: Path) -> str:
    parts = path.relative_to(TOPO.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> Iterator[str]:
    """Modules imported when ``path`` is imported: not inside functions, not for typing."""
    tree = ast.parse(path.read_text())
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if not isinstance(node, ast.FunctionDef | ast.ClassDef) else ():
            if isinstance(sub, ast.Import):
                yield from (a.name for a in sub.names)
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:
                    base = ".".join(
                        [*package.split(".")[: len(package.split(".")) - sub.level + 1], base]
                    ).strip(".")
                yield base
                yield from (f"{base}.{a.name}" for a in sub.names)


def import_graph() -> nx.DiGraph:
    modules = {_module(p): p for p in TOPO.rglob("*.py")}
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for name, path in modules.items():
        for imported in _top_level_imports(path):
            parts = imported.split(".")
            for n in range(2, len(parts) + 1):  # a module and the packages above it
                target = ".".join(parts[:n])
                if target in modules and target != name and not name.startswith(target + "."):
                    g.add_edge(name, target)
    return g


def test_topo_has_no_import_cycle() -> None:
    cycles = list(nx.simple_cycles(import_graph()))
    assert cycles == []


def test_only_backends_import_multiprocessing_objects_of_a_run() -> None:
    """The supervisor and everything above it never touch a process: only backends do."""
    g = import_graph()
    for name in ("topo.supervise", "topo.deadlock", "topo.api", "topo.cli", "topo.console"):
        reached = nx.descendants(g, name)
        assert not {m for m in reached if m.startswith("topo.backends.local")}, name


def test_the_import_graph_sees_real_edges() -> None:
    g = import_graph()
    assert g.has_edge("topo.supervise", "topo.deadlock")
    assert g.has_edge("topo.backends.local.launcher", "topo.supervise")
    assert g.has_edge("topo.checks.topology", "topo.graph")
    assert not g.has_edge("topo.graph", "topo.checks")


# Imports topo, its CLI and the local backend, runs a spec locally, and prints whether
# Ray was imported on the way.
NO_RAY = """
import sys
import topo, topo.cli
from topo.backends import get_backend
get_backend("local")
result = topo.run(sys.argv[1], record=False, output=lambda *a: None)
print(result.status, "ray" in sys.modules)
"""


def test_nothing_imports_ray_unless_a_run_asks_for_it() -> None:
    """The Ray backend is an extra: a run without --backend ray costs nothing more."""
    import subprocess
    import sys

    spec = Path(__file__).resolve().parents[1] / "specs" / "event.yaml"
    done = subprocess.run(
        [sys.executable, "-c", NO_RAY, str(spec)], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["ok", "False"], done.stderr


def test_only_the_ray_backend_imports_ray() -> None:
    importers = sorted(
        _module(path)
        for path in TOPO.rglob("*.py")
        if any(n == "ray" or n.startswith("ray.") for n in _top_level_imports(path))
    )
    assert importers, "the Ray backend's modules import ray: the check sees them"
    assert all(m.startswith("topo.backends.ray.") for m in importers), importers
