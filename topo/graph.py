"""The process/channel graph of a Plan (networkx), and queries in graph terms only.

Nodes are ``("instance", name)``, ``("channel", name)`` and ``("lock", name)``;
edges carry a ``rel``: ``output`` (instance -> channel), ``input`` (channel ->
instance), ``use`` (both ways), ``after`` (instance -> instance that waits) and
``over`` (condition -> the lock it is built on).

Two layers, kept apart from the wording of the checks (topo/checks/topology.py):

1. building the graph (``build_graph``) and its per-process view (``process_view``);
2. graph queries in graph terms only (``bound_by``, ``waits_for``, ``one_cycle_per_component``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import networkx as nx

from topo.model import ConditionLock
from topo.resolve import Plan, Role

Node = tuple[str, str]


# ----- 1. the graph -----------------------------------------------------------------------


def build_graph(plan: Plan) -> nx.MultiDiGraph:
    """One node per process instance, channel and lock; one edge per binding direction."""
    g = nx.MultiDiGraph()
    for inst in plan.instances:
        g.add_node(("instance", inst.name), process=inst.process)
    for section, name, model in plan.declared():
        g.add_node(("channel" if section == "channels" else "lock", name), kind=model.kind)
    for inst in plan.instances:
        me = ("instance", inst.name)
        for b in inst.bindings:
            other = ("channel", b.name) if b.name in plan.spec.channels else ("lock", b.name)
            if other not in g:
                continue  # an unknown name: T030 reports it
            if "output" in b.roles:
                g.add_edge(me, other, rel="output", param=b.param)
            if "input" in b.roles:
                g.add_edge(other, me, rel="input", param=b.param)
            if "use" in b.roles:
                g.add_edge(me, other, rel="use", param=b.param)
                g.add_edge(other, me, rel="use", param=b.param)
        for dep in plan.process_of(inst).after:
            for before in plan.instances_of(dep):
                g.add_edge(("instance", before.name), me, rel="after")
    for name, lock in plan.spec.locks.items():
        if isinstance(lock, ConditionLock) and lock.lock and ("lock", lock.lock) in g:
            g.add_edge(("lock", name), ("lock", lock.lock), rel="over")
    return g


def process_view(g: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """``g`` with the instances of each process merged into one ``("process", name)`` node.

    A process node's ``replicas`` attribute counts its instances; parallel edges that
    differ only by instance are merged, so each binding appears once.
    """

    def merged(node: Node) -> Node:
        return ("process", g.nodes[node]["process"]) if node[0] == "instance" else node

    view = nx.MultiDiGraph()
    for node, data in g.nodes(data=True):
        if node[0] != "instance":
            view.add_node(node, **data)
        elif merged(node) in view:
            view.nodes[merged(node)]["replicas"] += 1
        else:
            # Declaration order: nodes come in the order the plan lists instances.
            view.add_node(merged(node), replicas=1, order=len(view))
    seen: set[tuple[Node, Node, str, str | None]] = set()
    for u, v, data in g.edges(data=True):
        edge = (merged(u), merged(v), data["rel"], data.get("param"))
        if edge not in seen:
            seen.add(edge)
            view.add_edge(edge[0], edge[1], **data)
    return view


def plan_view(plan: Plan) -> nx.MultiDiGraph:
    """``process_view(build_graph(plan))``, built once per Plan for all the checks."""
    view = _VIEWS.get(plan)
    if view is None:
        view = _VIEWS[plan] = process_view(build_graph(plan))
    return view


# A plan's view lives as long as the plan (plans are hashed by identity).
_VIEWS: weakref.WeakKeyDictionary[Plan, nx.MultiDiGraph] = weakref.WeakKeyDictionary()


# ----- 2. graph queries -------------------------------------------------------------------


class Bound(NamedTuple):
    """One process binding a channel or lock: ``worker`` has ``tasks`` as input ``inbox``."""

    process: str
    role: Role
    param: str


def bound_by(view: nx.MultiDiGraph, node: Node) -> list[Bound]:
    """Every binding of ``node`` by a process, in the order processes are declared.

    Several checks ask for the same node: answers are kept on the view itself.
    """
    cache: dict[Node, list[Bound]] = view.graph.setdefault("bound_by", {})
    if node not in cache:
        cache[node] = _bound_by(view, node)
    return cache[node]


def _bound_by(view: nx.MultiDiGraph, node: Node) -> list[Bound]:
    found: set[Bound] = set()
    for u, _, data in view.in_edges(node, data=True):
        if u[0] == "process" and data["rel"] in ("output", "use"):
            found.add(Bound(u[1], data["rel"], data["param"]))
    for _, v, data in view.out_edges(node, data=True):
        if v[0] == "process" and data["rel"] == "input":
            found.add(Bound(v[1], "input", data["param"]))
    nodes = view.nodes
    return sorted(found, key=lambda b: (nodes[("process", b.process)]["order"], b.role, b.param))


def processes_of(bindings: Iterable[Bound], roles: Iterable[str]) -> list[str]:
    """The distinct processes among ``bindings`` with one of ``roles``, in order."""
    wanted = set(roles)
    return list(dict.fromkeys(b.process for b in bindings if b.role in wanted))


def replicas(view: nx.MultiDiGraph, process: str) -> int:
    return int(view.nodes[("process", process)]["replicas"])


def waits_for(view: nx.MultiDiGraph) -> nx.DiGraph:
    """Process -> process it must see finish before it starts (``after``), self-waits left out."""
    w = nx.DiGraph()
    w.add_nodes_from(n[1] for n in view if n[0] == "process")
    for u, v, data in view.edges(data=True):
        if data["rel"] == "after" and u != v:
            w.add_edge(v[1], u[1])
    return w


def flow_between_processes(view: nx.MultiDiGraph, keep: Callable[[str], bool]) -> nx.DiGraph:
    """Process -> channel -> process along outputs and inputs, through kept channels only."""
    flow = nx.DiGraph()
    flow.add_nodes_from(n for n in view if n[0] == "process")
    for u, v, data in view.edges(data=True):
        channel = v if data["rel"] == "output" else u if data["rel"] == "input" else None
        if channel is not None and channel[0] == "channel" and keep(channel[1]):
            flow.add_edge(u, v)
    return flow


def one_cycle_per_component(g: nx.DiGraph) -> list[list[Any]]:
    """For each strongly connected part with a cycle, the shortest cycle through its first
    node (in ``g``'s node order); the cycle is listed from that node, not repeated at the end.
    """
    order = {n: i for i, n in enumerate(g)}
    cycles = []
    for component in nx.strongly_connected_components(g):
        if len(component) < 2:
            continue
        sub = g.subgraph(component)
        start = min(component, key=order.__getitem__)
        paths = [nx.shortest_path(sub, nxt, start) for nxt in sub.successors(start)]
        best = min(paths, key=lambda p: (len(p), [order[n] for n in p]))
        cycles.append([start, *best[:-1]])
    return sorted(cycles, key=lambda c: order[c[0]])
