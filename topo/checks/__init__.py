"""Every check of a resolved spec, one small function per code, and their registry.

A check is a pure function of the Plan that yields ``Finding``s: where in the
document the problem is and one sentence on what will go wrong at run time.
``run_checks`` turns findings into located ``Diagnostic``s. Codes are stable and
documented in docs/checks.md:

- T0xx: the document itself (YAML, schema, references, targets): always errors
  (topo/checks/document.py).
- T1xx: the process/channel graph (topo/checks/topology.py over topo/graph.py).
- Checks that depend on where the plan runs (what the backend supports, its CPU count)
  are registered with ``backend_check`` and get the backend (topo/checks/placement.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from topo import cache
from topo.document import Loc
from topo.errors import Diagnostic, Severity
from topo.resolve import Plan

if TYPE_CHECKING:
    from topo.backends import Backend

SECTION_OF_ROLE: dict[str, str] = {"input": "inputs", "output": "outputs", "use": "uses"}


@dataclass(frozen=True)
class Finding:
    loc: Loc
    message: str
    key: bool = False  # point at the key of ``loc`` rather than its value
    process: str | None = None  # the process whose ``ignore`` list may silence it


CheckFn = Callable[[Plan], Iterable[Finding]]
BackendCheckFn = Callable[[Plan, "Backend"], Iterable[Finding]]
# document: of the spec alone; graph: of the process/channel graph (cached, topo/cache.py);
# backend: of the spec on the chosen backend.
Category = Literal["document", "graph", "backend"]


@dataclass(frozen=True)
class CheckInfo:
    code: str
    severity: Severity
    summary: str
    fn: Callable[..., Iterable[Finding]]
    category: Category = "document"
    wants_backend: bool = False  # called as fn(plan, backend)


REGISTRY: dict[str, CheckInfo] = {}


def check(
    code: str, severity: Severity, summary: str, *, backend: bool = False
) -> Callable[[Callable[..., Iterable[Finding]]], Callable[..., Iterable[Finding]]]:
    """Register ``fn(plan)`` under ``code``; ``fn(plan, backend)`` with ``backend``, for a
    check whose wording depends on the backend (then its cached findings do too)."""

    def register(fn: Callable[..., Iterable[Finding]]) -> Callable[..., Iterable[Finding]]:
        assert code not in REGISTRY, f"check code {code} registered twice"
        category: Category = "graph" if code.startswith("T1") else "document"
        REGISTRY[code] = CheckInfo(code, severity, summary, fn, category, backend)
        return fn

    return register


def backend_check(
    code: str, severity: Severity, summary: str
) -> Callable[[BackendCheckFn], BackendCheckFn]:
    """Register ``fn(plan, backend)`` under ``code``."""

    def register(fn: BackendCheckFn) -> BackendCheckFn:
        assert code not in REGISTRY, f"check code {code} registered twice"
        REGISTRY[code] = CheckInfo(code, severity, summary, fn, "backend", True)
        return fn

    return register


def _of(category: Category) -> list[CheckInfo]:
    return [info for info in REGISTRY.values() if info.category == category]


def run_checks(
    plan: Plan,
    *,
    select: Iterable[str] = (),
    ignore: Iterable[str] = (),
    backend: Backend | None = None,
) -> list[Diagnostic]:
    """Run every registered check (narrowed by ruff-style ``select``/``ignore`` prefixes)
    for a run on ``backend`` (default: the local one).

    Errors can be neither ignored nor silenced: they mean the run cannot work.
    """
    # The document and placement checks register themselves on import.
    import topo.checks.document
    import topo.checks.placement  # noqa: F401
    from topo.backends import get_backend

    backend = backend or get_backend("local")
    select, ignore = tuple(select), tuple(ignore)
    found: list[Diagnostic] = []
    for code, severity, f in [
        *_findings(plan, backend, _of("document")),
        *_graph_findings(plan, backend),
        *_findings(plan, backend, _of("backend")),
    ]:
        wanted = (not select or code.startswith(select)) and not code.startswith(ignore or ("~",))
        silenced = f.process is not None and code in plan.spec.processes[f.process].ignore
        if severity == "warning" and (silenced or not wanted):
            continue
        found.append(plan.document.diagnostic(f.loc, code, f.message, key=f.key, severity=severity))
    return sorted(set(found))


def _findings(
    plan: Plan, backend: Backend, checks: Iterable[CheckInfo]
) -> list[tuple[str, Severity, Finding]]:
    return [
        (info.code, info.severity, f)
        for info in checks
        for f in (info.fn(plan, backend) if info.wants_backend else info.fn(plan))
    ]


def _graph_findings(plan: Plan, backend: Backend) -> list[tuple[str, Severity, Finding]]:
    """The findings of every graph check: from the cache (topo/cache.py) when it has them."""
    bindings = [
        [i.name, i.process, [[b.param, b.name, sorted(b.roles), b.end] for b in i.bindings]]
        for i in plan.instances
    ]
    # The backend's wording is part of some findings (T101): its facts are in the key.
    can = backend.capabilities
    wording = [backend.name, can.unbounded_buffer, can.unread_queue_writer]
    key = cache.key(plan.document.data, bindings, wording)
    cached = cache.load(key, "graph")
    if isinstance(cached, list):
        try:
            decoded = [_decoded(plan, *entry) for entry in cached]
        except (TypeError, ValueError):  # an entry of another shape: recompute it
            pass
        else:
            return decoded
    _load_graph_checks()
    found = _findings(plan, backend, _of("graph"))
    cache.store(key, "graph", [[c, s, f.loc, f.message, f.key, f.process] for c, s, f in found])
    return found


def _decoded(
    plan: Plan, code: Any, severity: Any, loc: Any, message: Any, key: Any, process: Any
) -> tuple[str, Severity, Finding]:
    """One cached finding, checked: a damaged cache must not reach the user."""
    if not (
        isinstance(code, str)
        and code.startswith("T1")
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
