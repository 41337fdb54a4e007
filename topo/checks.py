"""Every check of a resolved spec, one small function per code, and their registry.

A check is a pure function of the Plan that yields ``Finding``s: where in the
document the problem is and one sentence on what will go wrong at run time.
``run_checks`` turns findings into located ``Diagnostic``s. Codes are stable and
documented in docs/checks.md:

- T0xx: the document itself (YAML, schema, references, targets): always errors.
- T1xx: the process/channel graph (see topo/graph.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from topo import cache
from topo.errors import Diagnostic, Severity
from topo.resolve import Plan
from topo.spec import (
    ConditionLock,
    NdarrayChannel,
    ObjectChannel,
    PipeChannel,
    did_you_mean,
)
from topo.targets import TargetError, load_target, signature_problem
from topo.yamlpos import Loc


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
    import topo.graph  # noqa: F401


# ----- references -------------------------------------------------------------------------

_SECTION_OF_ROLE = {"input": "inputs", "output": "outputs", "use": "uses"}


def _bindings(plan: Plan) -> Iterator[tuple[str, str, str, str]]:
    """(process, section, param, name) for every binding, once per process.

    Read from the instances: ``q${replica}`` names a different channel in each.
    """
    seen: set[tuple[str, str, str, str]] = set()
    for inst in plan.instances:
        for b in inst.bindings:
            for role in sorted(b.roles):
                found = (inst.process, _SECTION_OF_ROLE[role], b.param, b.name)
                if found not in seen:
                    seen.add(found)
                    yield found


@check("T030", "error", "a binding names no channel or lock")
def unknown_binding(plan: Plan) -> Iterator[Finding]:
    known = set(plan.spec.channels) | set(plan.spec.locks)
    for pname, section, param, name in _bindings(plan):
        if name not in known:
            yield Finding(
                ("processes", pname, section, param),
                f"process {pname!r} binds {name!r} under {section}, but no channel or lock "
                f"has that name{did_you_mean(name, known)}",
            )


@check("T031", "error", "a lock or pipe bound in a section that cannot hold it")
def misplaced_binding(plan: Plan) -> Iterator[Finding]:
    for pname, section, param, name in _bindings(plan):
        loc = ("processes", pname, section, param)
        if name in plan.spec.locks and section != "uses":
            yield Finding(
                loc, f"lock {name!r} is under {section} of {pname!r}: locks go under uses"
            )
        channel = plan.spec.channels.get(name)
        if isinstance(channel, PipeChannel) and not channel.duplex and section == "uses":
            yield Finding(
                loc,
                f"one-way pipe {name!r} is under uses of {pname!r}, so it is not clear which end "
                "it gets: put it under inputs (receiving end) or outputs (sending end)",
            )


@check("T032", "error", "'after' names no process, or the process itself")
def unknown_after(plan: Plan) -> Iterator[Finding]:
    for pname, process in plan.spec.processes.items():
        for i, other in enumerate(process.after):
            if other == pname:
                yield Finding(
                    ("processes", pname, "after", i),
                    f"process {pname!r} waits for itself to finish, so it never starts",
                )
            elif other not in plan.spec.processes:
                yield Finding(
                    ("processes", pname, "after", i),
                    f"process {pname!r} waits for {other!r}, which is not a process"
                    f"{did_you_mean(other, plan.spec.processes)}",
                )


@check("T033", "error", "a channel and a lock share a name")
def shared_name(plan: Plan) -> Iterator[Finding]:
    for name in sorted(set(plan.spec.channels) & set(plan.spec.locks)):
        yield Finding(
            ("locks", name),
            f"{name!r} is both a channel and a lock: bindings could not tell which one is meant",
            key=True,
        )


def _load(plan: Plan, target: str) -> Any:
    """``load_target`` once per distinct target of a plan: the callable or its TargetError."""
    found: dict[str, Any] = plan.cache.setdefault("targets", {})
    if target not in found:
        try:
            found[target] = load_target(target, plan.spec_dir)
        except TargetError as e:
            found[target] = e
    return found[target]


@check("T040", "error", "a target cannot be imported or called")
def target_imports(plan: Plan) -> Iterator[Finding]:
    for pname, process in plan.spec.processes.items():
        loaded = _load(plan, process.target)
        if isinstance(loaded, TargetError):
            yield Finding(("processes", pname, "target"), f"target of {pname!r}: {loaded}")
    for name, channel in plan.spec.channels.items():
        if isinstance(channel, ObjectChannel):
            loaded = _load(plan, channel.factory)
            if isinstance(loaded, TargetError):
                yield Finding(("channels", name, "factory"), f"factory of {name!r}: {loaded}")


@check("T041", "error", "a target's signature cannot take what the spec binds")
def target_signature(plan: Plan) -> Iterator[Finding]:
    for pname, process in plan.spec.processes.items():
        fn = _load(plan, process.target)
        if isinstance(fn, TargetError):
            continue  # T040 says it
        names = [*process.args, *process.inputs, *process.outputs, *process.uses]
        problem = signature_problem(fn, names)
        if problem:
            yield Finding(
                ("processes", pname, "target"),
                f"{process.target} {problem}: calling it for {pname!r} would fail",
            )
    for name, channel in plan.spec.channels.items():
        if isinstance(channel, ObjectChannel):
            fn = _load(plan, channel.factory)
            if isinstance(fn, TargetError):
                continue
            problem = signature_problem(fn, channel.args)
            if problem:
                yield Finding(
                    ("channels", name, "factory"),
                    f"{channel.factory} {problem}: building {name!r} would fail",
                )


@check("T050", "error", "a pipe end held by more or fewer instances than it has ends")
def pipe_ends(plan: Plan) -> Iterator[Finding]:
    for name, channel in plan.spec.channels.items():
        if not isinstance(channel, PipeChannel):
            continue
        users = plan.users_of(name)
        loc = ("channels", name)
        if channel.duplex:
            holders = sorted({inst.name for inst, _ in users})
            if len(holders) != 2:
                who = ", ".join(holders) or "no instance"
                yield Finding(
                    loc,
                    f"duplex pipe {name!r} has two ends but is bound by "
                    f"{len(holders)} instance(s) ({who}): it needs exactly two "
                    "(sharing an end corrupts data)",
                    key=True,
                )
            continue
        for role, word in (("input", "receiving"), ("output", "sending")):
            holders = sorted({inst.name for inst, b in users if role in b.roles})
            if len(holders) > 1:
                yield Finding(
                    loc,
                    f"the {word} end of one-way pipe {name!r} is held by "
                    f"{len(holders)} instances ({', '.join(holders)}): a pipe end "
                    "used by several processes at once corrupts data",
                    key=True,
                )


@check("T060", "error", "a shared-memory array that cannot be built")
def ndarray_needs_numpy(plan: Plan) -> Iterator[Finding]:
    arrays = [(n, c) for n, c in plan.spec.channels.items() if isinstance(c, NdarrayChannel)]
    if not arrays:
        return
    try:
        import numpy as np
    except ImportError:
        for name, _ in arrays:
            yield Finding(
                ("channels", name),
                f"ndarray {name!r} needs numpy, which is not installed: pip install 'topo[numpy]'",
                key=True,
            )
        return
    for name, channel in arrays:
        try:
            np.dtype(channel.dtype)
        except TypeError:
            yield Finding(
                ("channels", name, "dtype"),
                f"ndarray {name!r} has dtype "
                f"{channel.dtype!r}, which numpy does not know (try float64, int32)",
            )


@check("T051", "error", "a condition over a name that is not a lock or rlock")
def condition_lock(plan: Plan) -> Iterator[Finding]:
    for name, lock in plan.spec.locks.items():
        if not isinstance(lock, ConditionLock) or lock.lock is None:
            continue
        other = plan.spec.locks.get(lock.lock)
        loc = ("locks", name, "lock")
        if other is None:
            names = [n for n, m in plan.spec.locks.items() if m.kind in ("lock", "rlock")]
            yield Finding(
                loc,
                f"condition {name!r} is over {lock.lock!r}, which is not a lock"
                f"{did_you_mean(lock.lock, names)}",
            )
        elif other.kind not in ("lock", "rlock"):
            yield Finding(
                loc,
                f"condition {name!r} is over {lock.lock!r}, a {other.kind}: a "
                "condition needs a lock or rlock",
            )
        elif (other.via == "manager") != (lock.via == "manager"):
            yield Finding(
                loc,
                f"condition {name!r} and its lock {lock.lock!r} must both be "
                "built by the manager, or neither",
            )
