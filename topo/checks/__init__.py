"""Every check of a resolved spec, one small function per code, and their registry.

A check is a pure function of the Plan that yields ``Finding``s: where in the
document the problem is and one sentence on what will go wrong at run time.
``run_checks`` turns findings into located ``Diagnostic``s. Codes are stable and
documented in docs/checks.md:

- T0xx: the document itself (YAML, schema, references, targets): always errors
  (topo/checks/document.py).
- T1xx: the process/channel graph (topo/checks/topology.py over topo/graph.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from topo import cache
from topo.errors import Diagnostic, Severity
from topo.resolve import Plan
from topo.yamlpos import Loc

SECTION_OF_ROLE: dict[str, str] = {"input": "inputs", "output": "outputs", "use": "uses"}


@dataclass(frozen=True)
class Finding:
    loc: Loc
    message: str
    key: bool = False  # point at the key of ``loc`` rather than its value
    process: str | None = None  # the process whose ``ignore`` list may silence it


CheckFn = Callable[[Plan], Iterable[Finding]]


@dataclass(frozen=True)
class CheckInfo:
    code: str
    severity: Severity
    summary: str
    fn: CheckFn


REGISTRY: dict[str, CheckInfo] = {}


def check(code: str, severity: Severity, summary: str) -> Callable[[CheckFn], CheckFn]:
    """Register ``fn`` under ``code``."""

    def register(fn: CheckFn) -> CheckFn:
        assert code not in REGISTRY, f"check code {code} registered twice"
        REGISTRY[code] = CheckInfo(code, severity, summary, fn)
        return fn

    return register


def run_checks(
    plan: Plan,
    *,
    select: Iterable[str] = (),
    ignore: Iterable[str] = (),
) -> list[Diagnostic]:
    """Run every registered check (narrowed by ruff-style ``select``/``ignore`` prefixes).

    Errors can be neither ignored nor silenced: they mean the run cannot work.
    """
    select, ignore = tuple(select), tuple(ignore)
    found: list[Diagnostic] = []
    import topo.checks.document  # noqa: F401  (its checks register themselves)

    document_checks = [info for code, info in REGISTRY.items() if not _is_graph_check(code)]
    for code, severity, f in [*_findings(plan, document_checks), *_graph_findings(plan)]:
        wanted = (not select or code.startswith(select)) and not code.startswith(ignore or ("~",))
        silenced = f.process is not None and code in plan.spec.processes[f.process].ignore
        if severity == "warning" and (silenced or not wanted):
            continue
        found.append(plan.document.diagnostic(f.loc, code, f.message, key=f.key, severity=severity))
    return sorted(set(found))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _is_graph_check(code: str) -> bool:
    return code.startswith("T1")


def _findings(plan: Plan, checks: Iterable[CheckInfo]) -> list[tuple[str, Severity, Finding]]:
    return [(info.code, info.severity, f) for info in checks for f in info.fn(plan)]


def _graph_findings(plan: Plan) -> list[tuple[str, Severity, Finding]]:
    """The findings of every graph check: from the cache (topo/cache.py) when it has them."""
    bindings = [
        [i.name, i.process, [[b.param, b.name, sorted(b.roles), b.end] for b in i.bindings]]
        for i in plan.instances
    ]
    key = cache.key(plan.document.data, bindings, usable_cpus())
    cached = cache.load(key, "graph")
    if isinstance(cached, list):
        try:
            decoded = [_decoded(plan, *entry) for entry in cached]
        except (TypeError, ValueError):  # an entry of another shape: recompute it
            pass
        else:
            return decoded
    _load_graph_checks()
    found = _findings(plan, [info for code, info in REGISTRY.items() if _is_graph_check(code)])
    cache.store(key, "graph", [[c, s, f.loc, f.message, f.key, f.process] for c, s, f in found])
    return found


def _decoded(
    plan: Plan, code: Any, severity: Any, loc: Any, message: Any, key: Any, process: Any
) -> tuple[str, Severity, Finding]:
    """One cached finding, checked: a damaged cache must not reach the user."""
    if not (
        isinstance(code, str)
        and _is_graph_check(code)
        and severity in ("error", "warning")
        and isinstance(loc, list)
        and all(isinstance(part, str | int) for part in loc)
        and isinstance(message, str)
        and isinstance(key, bool)
        and (process is None or process in plan.spec.processes)
    ):
        raise ValueError("not a finding of this spec")
    return code, severity, Finding(tuple(loc), message, key, process)


def _load_graph_checks() -> None:
    # Graph checks register themselves on import; importing here keeps networkx off
    # the path of commands that never check a spec, and of specs the cache knows.
    import topo.checks.topology  # noqa: F401
