"""The T1xx checks: what the process/channel graph (topo/graph.py) says will go wrong.

Each check asks the graph's queries and puts the answer into words; it registers
itself with ``topo.checks.check`` when this module is imported (``run_checks``
imports it only when the cache does not know the findings).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import networkx as nx

from topo.backends import Backend
from topo.checks import SECTION_OF_ROLE, Finding, check
from topo.graph import (
    Bound,
    bound_by,
    flow_between_processes,
    one_cycle_per_component,
    plan_view,
    processes_of,
    replicas,
    waits_for,
)
from topo.model import (
    ArrayChannel,
    BarrierLock,
    BoundedSemaphoreLock,
    ConditionLock,
    JoinableQueueChannel,
    QueueChannel,
    SemaphoreLock,
    ValueChannel,
)
from topo.resolve import Plan

# ----- 3. the checks ----------------------------------------------------------------------


def _quoted(names: Sequence[str]) -> str:
    """``'a'``, ``'a' and 'b'``, ``'a', 'b' and 'c'``."""
    q = [repr(n) for n in names]
    return q[0] if len(q) == 1 else f"{', '.join(q[:-1])} and {q[-1]}"


def _count(n: int, noun: str) -> str:
    """``1 instance``, ``3 instances``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _loc(b: Bound) -> tuple[str, str, str, str]:
    return ("processes", b.process, SECTION_OF_ROLE[b.role], b.param)


def _message_channels(plan: Plan) -> Iterator[tuple[str, Any]]:
    """Channels that carry messages one way (duplex pipes have no reader or writer side)."""
    for name, channel in plan.spec.channels.items():
        if channel.traits.messages and not getattr(channel, "duplex", False):
            yield name, channel


def _is_bounded(channel: Any) -> bool:
    """Whether a writer can block in put()/send() because nobody reads."""
    if isinstance(channel, QueueChannel | JoinableQueueChannel):
        return channel.maxsize > 0
    return bool(channel.traits.bounded_by_os)


def _unread_consequence(channel: Any, backend: Backend) -> str:
    can = backend.capabilities
    if isinstance(channel, QueueChannel | JoinableQueueChannel):
        if channel.maxsize > 0:
            return f"once it holds {channel.maxsize} items every put() blocks forever"
        if channel.via == "manager":
            return "everything put into it is lost"
        return f"everything put into it is lost, and {can.unread_queue_writer}"
    call = "send()" if channel.kind == "pipe" else "put()"
    return f"once {can.unbounded_buffer} is full every {call} blocks forever"


@check("T101", "warning", "a channel is written but nothing reads it", backend=True)
def written_never_read(plan: Plan, backend: Backend) -> Iterator[Finding]:
    view = plan_view(plan)
    for name, channel in _message_channels(plan):
        bindings = bound_by(view, ("channel", name))
        if processes_of(bindings, ("input", "use")):
            continue
        for b in bindings:
            yield Finding(
                _loc(b),
                f"channel {name!r} is written by {b.process!r} but nothing reads it: "
                f"{_unread_consequence(channel, backend)}",
                process=b.process,
            )


@check("T102", "error", "a channel is read but nothing writes to it")
def read_never_written(plan: Plan) -> Iterator[Finding]:
    view = plan_view(plan)
    for name, _ in _message_channels(plan):
        bindings = bound_by(view, ("channel", name))
        if processes_of(bindings, ("output", "use")):
            continue
        for b in bindings:
            yield Finding(
                _loc(b),
                f"channel {name!r} is read by {b.process!r} but nothing writes to it: "
                "readers block forever",
            )


@check("T103", "warning", "a loop of processes through bounded channels")
def bounded_loop(plan: Plan) -> Iterator[Finding]:
    view = plan_view(plan)
    bounded = {name for name, channel in _message_channels(plan) if _is_bounded(channel)}
    flow = flow_between_processes(view, bounded.__contains__)
    for cycle in one_cycle_per_component(flow):
        names = [str(node[1]) for node in cycle]
        first_channel = next(str(node[1]) for node in cycle if node[0] == "channel")
        processes = sorted({str(node[1]) for node in cycle if node[0] == "process"})
        yield Finding(
            ("channels", first_channel),
            f"bounded channels form a loop ({' -> '.join([*names, names[0]])}): once they "
            "are full, every process on it blocks writing to the next and none reads again",
            key=True,
            process=processes[0] if len(processes) == 1 else None,
        )


@check("T104", "warning", "a channel or lock is declared but no process binds it")
def declared_unused(plan: Plan) -> Iterator[Finding]:
    view = plan_view(plan)
    for section, name, model in plan.declared():
        node = ("channel" if section == "channels" else "lock", name)
        if node not in view or bound_by(view, node):
            continue
        if name in plan.spec.channels and name in plan.spec.locks:
            continue  # T033: bindings cannot tell the two apart
        if any(data["rel"] == "over" for _, _, data in view.in_edges(node, data=True)):
            continue  # the lock of a condition is used through it
        what = "channel" if section == "channels" else model.kind
        if section == "channels":
            why = "it is built for nothing, and whatever should flow through it never does"
        else:
            why = "it is built for nothing and synchronises nobody"
        yield Finding(
            (section, name),
            f"{what} {name!r} is declared but no process binds it: {why}",
            key=True,
        )


def _barrier_users(view: nx.MultiDiGraph, name: str) -> tuple[int, list[str]]:
    procs = processes_of(bound_by(view, ("lock", name)), ("input", "output", "use"))
    return sum(replicas(view, p) for p in procs), procs


@check("T110", "error", "a barrier waits for more parties than instances use it")
def barrier_too_many_parties(plan: Plan) -> Iterator[Finding]:
    view = plan_view(plan)
    for name, lock in plan.spec.locks.items():
        if not isinstance(lock, BarrierLock) or lock.parties is None:
            continue
        users, _ = _barrier_users(view, name)
        if 0 < users < lock.parties:
            outcome = (
                f"every wait() times out after {lock.timeout:g} s and breaks the barrier"
                if lock.timeout
                else "every wait() blocks forever"
            )
            yield Finding(
                ("locks", name, "parties"),
                f"barrier {name!r} waits for {lock.parties} parties but only "
                f"{_count(users, 'instance')} use{'s' if users == 1 else ''} it: {outcome}",
            )


@check("T111", "warning", "a barrier lets fewer parties through than instances use it")
def barrier_too_few_parties(plan: Plan) -> Iterator[Finding]:
    view = plan_view(plan)
    for name, lock in plan.spec.locks.items():
        if not isinstance(lock, BarrierLock) or lock.parties is None:
            continue
        users, procs = _barrier_users(view, name)
        if users > lock.parties:
            left = users % lock.parties  # if each waits once, these are never released
            tail = {0: "", 1: ", and the last one waits forever"}.get(
                left, f", and the last {left} wait forever"
            )
            yield Finding(
                ("locks", name, "parties"),
                f"barrier {name!r} releases {lock.parties} parties at a time but {users} "
                f"instances use it: they pass in groups, not all together{tail}",
                process=procs[0] if len(procs) == 1 else None,
            )


_LONELY = {
    "event": "nothing else can set it, so its wait() blocks forever",
    "condition": "nothing else can notify it, so its wait() blocks forever",
    "semaphore": "nothing else acquires or releases it, so it limits nothing, and an "
    "acquire() past its value blocks forever",
}
_LONELY["bounded_semaphore"] = _LONELY["semaphore"]


@check("T112", "warning", "an event, condition or semaphore used by a single instance")
def lonely_sync(plan: Plan) -> Iterator[Finding]:
    view = plan_view(plan)
    for name, lock in plan.spec.locks.items():
        if lock.kind not in _LONELY:
            continue
        bindings = bound_by(view, ("lock", name))
        procs = processes_of(bindings, ("input", "output", "use"))
        if len(procs) == 1 and replicas(view, procs[0]) == 1:
            yield Finding(
                _loc(bindings[0]),
                f"{lock.kind} {name!r} is used only by {procs[0]!r}: {_LONELY[lock.kind]}",
                process=procs[0],
            )


def _excludes(model: Any) -> bool:
    """Whether holding ``model`` keeps every other holder out (a mutex of some sort)."""
    if isinstance(model, SemaphoreLock | BoundedSemaphoreLock):
        return model.value == 1
    if isinstance(model, ValueChannel | ArrayChannel):
        return model.lock and model.via != "manager"  # only shared memory has get_lock()
    return model.kind in ("lock", "rlock", "condition")


def _guards(plan: Plan, view: nx.MultiDiGraph, process: str) -> set[str]:
    """Names of what gives ``process`` mutual exclusion: a lock or rlock, a condition (named
    by the lock underneath), a semaphore of value 1, or the lock of a locked value/array."""
    held: set[str] = set()
    for _, node, data in view.out_edges(("process", process), data=True):
        if data["rel"] not in ("use", "output"):
            continue
        models = plan.spec.locks if node[0] == "lock" else plan.spec.channels
        model = models.get(node[1])
        if model is not None and _excludes(model):
            under = model.lock if isinstance(model, ConditionLock) else None
            held.add(under or node[1])
    return held


@check("T113", "warning", "a value or array with lock: false written by several instances")
def unlocked_shared_state(plan: Plan) -> Iterator[Finding]:
    view = plan_view(plan)
    for name, channel in plan.spec.channels.items():
        if not isinstance(channel, ValueChannel | ArrayChannel) or channel.lock:
            continue
        writers = processes_of(bound_by(view, ("channel", name)), ("output", "use"))
        count = sum(replicas(view, p) for p in writers)
        if count < 2:
            continue
        if set.intersection(*(_guards(plan, view, p) for p in writers)):
            continue  # every writer binds the same lock: assume they take it
        yield Finding(
            ("channels", name, "lock"),
            f"{channel.kind} {name!r} has lock: false and is written by {count} instances "
            f"of {_quoted(writers)} that share no lock: concurrent updates such as += are lost",
            process=writers[0] if len(writers) == 1 else None,
        )


@check("T120", "error", "processes wait for each other in 'after'")
def after_cycle(plan: Plan) -> Iterator[Finding]:
    waits = waits_for(plan_view(plan))
    for cycle in one_cycle_per_component(waits):
        first, second = str(cycle[0]), str(cycle[1])
        chain = ", which waits for ".join(repr(str(p)) for p in [*cycle, first])
        yield Finding(
            ("processes", first, "after", plan.spec.processes[first].after.index(second)),
            f"processes wait for one another to finish before they start: {chain}, "
            "so none of them ever starts",
        )


@check("T121", "error", "a process waits ('after') for a reader of a channel only it writes")
def after_starves(plan: Plan) -> Iterator[Finding]:
    view = plan_view(plan)
    waits = waits_for(view)
    for name, _ in _message_channels(plan):
        bindings = bound_by(view, ("channel", name))
        writers = processes_of(bindings, ("output", "use"))
        for reader in processes_of(bindings, ("input",)):
            if not writers or reader in writers:
                continue
            waiting = nx.ancestors(waits, reader)  # processes that start after it finishes
            if not set(writers) <= waiting:
                continue
            path = nx.shortest_path(waits, writers[0], reader)
            after = plan.spec.processes[writers[0]].after
            if len(writers) == 1:
                who = f"its only writer {writers[0]!r} starts"
                never = f"{writers[0]!r} never starts"
            else:
                who = f"its writers {_quoted(writers)} all start"
                never = "they never start"
            chain = ", which waits for ".join(repr(p) for p in path)
            via = f" ({chain})" if len(path) > 2 else ""
            yield Finding(
                ("processes", writers[0], "after", after.index(path[1])),
                f"process {reader!r} reads channel {name!r}, but {who} after {reader!r} "
                f"finishes{via}: {reader!r} blocks forever and {never}",
            )


def _held_consequence(kind: str) -> str:
    if kind == "barrier":
        return (
            "a restarted instance waits at it again, so its count goes wrong and the other "
            "parties block or pass too early"
        )
    if kind == "pipe":
        return (
            "an instance that dies mid-message leaves half a message behind, so the other end "
            "reads garbage or blocks"
        )
    what = "a slot of it" if "semaphore" in kind else "it"
    return (
        f"an instance that dies holding {what} never releases it, so the other users block forever"
    )


@check("T122", "warning", "restart: on-failure on a process holding a lock, pipe end or barrier")
def restart_while_holding(plan: Plan) -> Iterator[Finding]:
    view = plan_view(plan)
    for pname, process in plan.spec.processes.items():
        if process.restart != "on-failure" or process.max_restarts == 0:
            continue
        held: dict[str, str] = {}
        for _, node in view.out_edges(("process", pname)):
            if node[0] == "lock" and plan.spec.locks[node[1]].traits.held:
                held[node[1]] = plan.spec.locks[node[1]].kind
        ends = [u for u, _ in view.in_edges(("process", pname))]
        ends += [v for _, v in view.out_edges(("process", pname))]
        for node in ends:
            if node[0] == "channel" and plan.spec.channels[node[1]].kind == "pipe":
                held[node[1]] = "pipe"
        for name in sorted(held):
            kind = held[name]
            verb = "holds an end of" if kind == "pipe" else "uses"
            yield Finding(
                ("processes", pname, "restart"),
                f"process {pname!r} restarts on failure and {verb} {kind} {name!r}: "
                f"{_held_consequence(kind)}",
                process=pname,
            )
