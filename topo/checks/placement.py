"""Checks of a spec on the backend chosen to run it: what the backend cannot build or
do (T070) and what does not fit its size (T123). The facts come from the backend."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from topo.checks import Finding, backend_check
from topo.resolve import Plan

if TYPE_CHECKING:
    from topo.backends import Backend

# A process with more instances than this many per usable CPU is oversubscribed...
OVERSUBSCRIBED_PER_CPU = 4
# ...but a handful of processes is never worth a warning, even on a single CPU.
OVERSUBSCRIBED_AT_LEAST = 16


def _instead(backend: Backend, what: str) -> str:
    hint = backend.capabilities.instead.get(what)
    return f"; {hint}" if hint else ""


@backend_check("T070", "error", "the chosen backend cannot build or do this")
def unsupported(plan: Plan, backend: Backend) -> Iterator[Finding]:
    can = backend.capabilities
    on = f"the {backend.name} backend"
    if plan.spec.start_method not in can.start_methods:
        yield Finding(
            ("start_method",),
            f"{on} cannot start instances with {plan.spec.start_method!r}"
            f"{_instead(backend, 'start_method')}",
        )
    for section, name, model in plan.declared():
        if model.kind not in can.kinds:
            yield Finding(
                (section, name),
                f"{on} cannot build a {model.kind} ({name!r}){_instead(backend, model.kind)}",
                key=True,
            )
        elif getattr(model, "via", None) == "manager" and not can.via_manager:
            yield Finding(
                (section, name, "via"),
                f"{on} has no manager process for {name!r}{_instead(backend, 'via')}",
            )
        elif getattr(model, "transport", "auto") not in can.transports:
            yield Finding(
                (section, name, "transport"),
                f"{on} cannot carry {name!r} with transport {model.transport!r}"
                f"{_instead(backend, 'transport')}",
            )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _cpus(n: float) -> str:
    """``2``, ``0.5``, ``0.3`` (not 0.30000000000000004): an amount of CPUs."""
    return str(int(n)) if float(n).is_integer() else f"{round(n, 4):g}"


def _asked(process: str, instances: int, cpus: float) -> str:
    """``producer 1``, ``worker[0..3] 4 x 1``: what one process's instances ask for."""
    if instances == 1:
        return f"{process} {_cpus(cpus)}"
    return f"{process}[0..{instances - 1}] {instances} x {_cpus(cpus)}"


@backend_check(
    "T123",
    "warning",
    "more process instances than a few per CPU, or more CPUs asked for than there are",
)
def oversubscribed(plan: Plan, backend: Backend) -> Iterator[Finding]:
    # A process that lists T123 in its `ignore` declares itself cheap (I/O-bound, mostly
    # asleep): its instances are not counted, which is how the warning is silenced in a spec.
    counted = {
        p: len(plan.instances_of(p))
        for p, process in plan.spec.processes.items()
        if "T123" not in process.ignore
    }
    cpus = backend.cpus()
    # `resources: {cpus: c}` asks for c CPUs per instance; an instance that does not say
    # counts as 1/OVERSUBSCRIBED_PER_CPU of one, and a handful of them as nothing at all.
    asks = {p: plan.spec.processes[p].cpus for p in counted}
    declared = {p: n * c for p, n in counted.items() if (c := asks[p]) is not None}
    light = sum(n for p, n in counted.items() if asks[p] is None)
    if not declared:
        if light <= max(OVERSUBSCRIBED_PER_CPU * cpus, OVERSUBSCRIBED_AT_LEAST):
            return
        largest = max(counted, key=counted.__getitem__)
        yield Finding(
            ("processes", largest, "replicas"),
            f"{light} process instances on {_count(cpus, 'CPU')} are more than "
            f"{OVERSUBSCRIBED_PER_CPU} per CPU: they compete for CPU time, so CPU-bound work "
            "runs slower than with fewer instances, and each costs a whole Python "
            "interpreter's memory",
        )
        return
    light_share = light / OVERSUBSCRIBED_PER_CPU if light > OVERSUBSCRIBED_AT_LEAST else 0.0
    demand = sum(declared.values()) + light_share
    if demand <= cpus + 1e-9:
        return
    parts = sorted(declared, key=declared.__getitem__, reverse=True)
    listed = parts if len(parts) <= 4 else parts[:3]
    shown = [_asked(p, counted[p], asks[p] or 0.0) for p in listed]
    if len(parts) > len(listed):
        rest = sum(declared[p] for p in parts[len(listed) :])
        shown.append(f"{len(parts) - len(listed)} more processes {_cpus(rest)}")
    if light_share:
        shown.append(
            f"{_cpus(light_share)} for {light} instances without cpus, "
            f"{OVERSUBSCRIBED_PER_CPU} to a CPU"
        )
    if light_share > declared[parts[0]]:
        lightest = [p for p in counted if asks[p] is None]
        where: tuple[str, ...] = ("processes", max(lightest, key=counted.__getitem__), "replicas")
    else:
        where = ("processes", parts[0], "resources", "cpus")
    yield Finding(
        where,
        f"the processes ask for {_cpus(demand)} CPUs in all ({', '.join(shown)}) and the "
        f"{backend.name} backend has {_count(cpus, 'CPU')}: they will share them, so each "
        "instance gets less CPU time than it asks for",
    )


def shared_bytes(plan: Plan) -> dict[str, int]:
    """channel -> the bytes it takes in shared memory (ndarrays, shm queues)."""
    sizes = {}
    for name, channel in plan.spec.channels.items():
        size = getattr(channel, "shared_bytes", 0)
        if size:
            sizes[name] = size
    return sizes


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


@backend_check("T124", "warning", "more shared memory than the machine has for it")
def shared_memory_too_big(plan: Plan, backend: Backend) -> Iterator[Finding]:
    room = backend.shared_memory()
    sizes = shared_bytes(plan)
    if room is None or not sizes or sum(sizes.values()) <= room:
        return
    largest = max(sizes, key=sizes.__getitem__)
    yield Finding(
        ("channels", largest),
        f"the shared-memory channels need {_gb(sum(sizes.values()))} "
        f"({largest!r} {_gb(sizes[largest])}), more than the {_gb(room)} the "
        f"{backend.name} backend has for shared memory: the run would be refused",
        key=True,
    )
