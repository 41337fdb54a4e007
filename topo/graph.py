"""The process/channel graph of a Plan (networkx), and the checks that read it.

Nodes are ``("instance", name)``, ``("channel", name)`` and ``("lock", name)``;
edges carry a ``rel``: ``output`` (instance -> channel), ``input`` (channel ->
instance), ``use`` (both ways) and ``after`` (instance -> instance that waits).
Graph algorithms stay here in graph terms; the wording lives in each check.
"""

from __future__ import annotations

import networkx as nx

from topo.resolve import Plan

Node = tuple[str, str]


def build_graph(plan: Plan) -> nx.MultiDiGraph:
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
    return g
