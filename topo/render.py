"""Pictures of a Plan's topology: Mermaid and Graphviz DOT text, and DOT rendered to a file.

One node per process, its label showing the number of replicas with a multiplication
sign (``worker`` times 4), so a picture stays
readable however many instances run. Shapes tell the three sorts of node apart, the
same in both languages:

- process: a box (three-dimensional in DOT when it has replicas);
- message channel (queue, simple_queue, joinable_queue, pipe): a flag;
- shared state (value, array, dict, list, namespace, object): a cylinder;
- lock (lock, rlock, semaphore, condition, event, barrier...): a hexagon.

Edges: ``outputs`` process -> channel and ``inputs`` channel -> process (solid), ``uses``
both ways (dashed), ``after`` from the process waited for to the one that waits
(dotted), and a condition to the lock it is built on (dotted). An edge is labelled with
its parameter name when that differs from the channel's or lock's name.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import networkx as nx

from topo.errors import TopoError
from topo.graph import Node, build_graph, process_view
from topo.resolve import Plan

RENDER_FORMATS = ("svg", "png", "pdf")
GRAPHVIZ_HINT = (
    "install Graphviz: apt-get install graphviz (Debian, Ubuntu), brew install graphviz "
    "(macOS), or see https://graphviz.org/download/"
)
RENDER_TIMEOUT_S = 60
TIMES = "\u00d7"  # the multiplication sign

_COLOURS = {"process": "#dbeafe", "channel": "#dcfce7", "state": "#e0e7ff", "lock": "#fef3c7"}
_STROKES = {"process": "#1d4ed8", "channel": "#15803d", "state": "#4338ca", "lock": "#b45309"}


class RenderError(TopoError):
    """A picture could not be rendered: Graphviz is missing, failed, or the format is unknown."""


# ----- what to draw, in neither language ----------------------------------------------------


def _node_id(node: Node) -> str:
    # Names are identifiers, so the id is safe in both languages; the prefix keeps a
    # process, a channel and a lock of the same name apart (and Mermaid's `end` away).
    return f"{node[0][0]}_{node[1]}"


def _family(plan: Plan, node: Node) -> str:
    """``process``, ``channel`` (messages), ``state`` (shared data) or ``lock``."""
    if node[0] == "channel":
        return "channel" if plan.spec.channels[node[1]].traits.messages else "state"
    return node[0]


def _details(plan: Plan, node: Node) -> str:
    """The second line of a channel's or lock's label: its kind and what sets it apart."""
    model: Any = (plan.spec.channels if node[0] == "channel" else plan.spec.locks)[node[1]]
    parts = [model.kind]
    if getattr(model, "maxsize", 0):
        parts.append(f"maxsize {model.maxsize}")
    if model.kind == "pipe":
        parts.append("duplex" if model.duplex else "one-way")
    if model.kind in ("value", "array"):
        parts[0] += f" {model.typecode}"
        if model.kind == "array":
            parts[0] += f"[{model.length}]"
        if not model.lock:
            parts.append("no lock")
    if model.kind in ("semaphore", "bounded_semaphore"):
        parts.append(f"value {model.value}")
    if model.kind == "barrier":
        parties = plan.barrier_parties.get(node[1], model.parties)
        parts.append(f"{parties} parties")
    if model.kind == "object":
        parts.append(model.factory)
    if getattr(model, "via", None) == "manager":
        parts.append("via manager")
    return ", ".join(parts)


def _label_lines(plan: Plan, view: nx.MultiDiGraph, node: Node) -> list[str]:
    if node[0] == "process":
        n = view.nodes[node]["replicas"]
        title = f"{node[1]} {TIMES}{n}" if n > 1 else node[1]
        return [f"{title} (daemon)" if plan.spec.processes[node[1]].daemon else title]
    return [node[1], _details(plan, node)]


_EDGE_ORDER = {"after": 0, "input": 1, "output": 2, "use": 3, "over": 4}


def _edges(view: nx.MultiDiGraph) -> list[tuple[Node, Node, str, str]]:
    """(tail, head, rel, label) for each edge to draw, grouped by process in declaration
    order (what it waits for, reads, writes, uses), conditions' locks last."""
    position = {node: i for i, node in enumerate(view)}
    drawn = []
    for u, v, data in view.edges(data=True):
        rel = data["rel"]
        if rel == "use" and u[0] != "process":
            continue  # a `use` is two edges in the graph and one line in the picture
        param = data.get("param")
        other = v if u[0] == "process" else u
        label = rel if rel in ("after", "over") else param if param and param != other[1] else ""
        drawn.append((u, v, rel, label))

    def rank(edge: tuple[Node, Node, str, str]) -> tuple[int, int]:
        u, v, rel, _ = edge
        owner = u if rel in ("output", "use") else v
        return (len(position) if rel == "over" else position[owner], _EDGE_ORDER[rel])

    return sorted(drawn, key=rank)


def _view(plan: Plan) -> nx.MultiDiGraph:
    return process_view(build_graph(plan))


def _ordered_nodes(view: nx.MultiDiGraph) -> list[Node]:
    rank = {"process": 0, "channel": 1, "lock": 2}
    return sorted(view, key=lambda n: rank[n[0]])  # stable: declaration order within


# ----- Mermaid ------------------------------------------------------------------------------

_MERMAID_SHAPES = {
    "process": ('["', '"]'),
    "channel": ('>"', '"]'),
    "state": ('[("', '")]'),
    "lock": ('{{"', '"}}'),
}
_MERMAID_ARROWS = {"output": "-->", "input": "-->", "use": "<-.->", "after": "-.->", "over": "-.-"}


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(plan: Plan) -> str:
    """The topology as a Mermaid flowchart (paste into Markdown inside ```mermaid)."""
    view = _view(plan)
    lines = ["flowchart LR"]
    families: dict[str, list[str]] = {}
    for node in _ordered_nodes(view):
        family = _family(plan, node)
        opening, closing = _MERMAID_SHAPES[family]
        label = "<br>".join(_mermaid_text(line) for line in _label_lines(plan, view, node))
        lines.append(f"    {_node_id(node)}{opening}{label}{closing}")
        families.setdefault(family, []).append(_node_id(node))
    for u, v, rel, label in _edges(view):
        arrow = _MERMAID_ARROWS[rel]
        text = f"|{_mermaid_text(label)}|" if label else ""
        lines.append(f"    {_node_id(u)} {arrow}{text} {_node_id(v)}")
    for family, ids in families.items():
        lines.append(f"    classDef {family} fill:{_COLOURS[family]},stroke:{_STROKES[family]}")
        lines.append(f"    class {','.join(ids)} {family}")
    return "\n".join(lines) + "\n"


# ----- DOT ----------------------------------------------------------------------------------

_DOT_SHAPES = {"process": "box", "channel": "cds", "state": "cylinder", "lock": "hexagon"}
_DOT_EDGE_STYLES = {
    "output": "",
    "input": "",
    "use": "dir=both, style=dashed",
    "after": "style=dotted",
    "over": "style=dotted, arrowhead=none",
}


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_label(lines: list[str]) -> str:
    return '"' + "\\n".join(_dot_string(line)[1:-1] for line in lines) + '"'


def to_dot(plan: Plan) -> str:
    """The topology as a Graphviz digraph (render with ``render_file`` or ``dot -Tsvg``)."""
    view = _view(plan)
    lines = [
        f"digraph {_dot_string(plan.name)} {{",
        "    rankdir=LR;",
        '    node [fontname="Helvetica", fontsize=11, style=filled];',
        '    edge [fontname="Helvetica", fontsize=9];',
    ]
    for node in _ordered_nodes(view):
        family = _family(plan, node)
        shape = _DOT_SHAPES[family]
        if family == "process" and view.nodes[node]["replicas"] > 1:
            shape = "box3d"
        attrs = (
            f"label={_dot_label(_label_lines(plan, view, node))}, shape={shape}, "
            f'fillcolor="{_COLOURS[family]}", color="{_STROKES[family]}"'
        )
        lines.append(f"    {_node_id(node)} [{attrs}];")
    for u, v, rel, label in _edges(view):
        attrs = ", ".join(
            a for a in (_DOT_EDGE_STYLES[rel], f"label={_dot_string(label)}" if label else "") if a
        )
        lines.append(f"    {_node_id(u)} -> {_node_id(v)}" + (f" [{attrs}];" if attrs else ";"))
    lines.append("}")
    return "\n".join(lines) + "\n"


# ----- rendering ----------------------------------------------------------------------------


def render_file(dot_text: str, path: str | Path) -> None:
    """Render DOT text to ``path`` with Graphviz; the format is the file's suffix.

    Raises ``RenderError`` (saying how to install Graphviz when ``dot`` is missing).
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in RENDER_FORMATS:
        raise RenderError(
            f"cannot render {str(path)!r}: the file name must end in "
            + ", ".join(f".{f}" for f in RENDER_FORMATS)
        )
    dot = shutil.which("dot")
    if dot is None:
        raise RenderError(
            f"rendering {str(path)!r} needs Graphviz's 'dot' command: {GRAPHVIZ_HINT}"
        )
    try:
        done = subprocess.run(
            [dot, f"-T{fmt}", "-o", str(path)],
            input=dot_text.encode(),
            capture_output=True,
            timeout=RENDER_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RenderError(
            f"Graphviz took more than {RENDER_TIMEOUT_S} s to render {str(path)!r}"
        ) from None
    except OSError as e:
        raise RenderError(f"cannot run Graphviz's 'dot' ({e}): {GRAPHVIZ_HINT}") from None
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
        raise RenderError(f"Graphviz could not render {str(path)!r}: {reason}")
