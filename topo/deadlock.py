"""The deadlock detector's reasoning: backend-neutral, pure, over names.

A backend reports who waits for what (``Wait``: an operation on a named channel or
lock, in an instance that has not returned yet) and who holds which lock. The
supervisor declares a deadlock when every live non-daemon instance is blocked,
everyone who could wake each of them is blocked or gone, and nothing has
progressed for ``QUIET_S`` (the backend measures progress). ``find_deadlock``
checks the first two and explains the deadlock in words.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

from topo.resolve import Plan

QUIET_S = 1.0  # no progress for this long, with everyone blocked, is a deadlock


class Wait(NamedTuple):
    """An instance blocked in ``op`` on primitive ``name``; ``name`` is None for an
    instance whose target returned and which cannot exit until its queues are flushed."""

    op: str  # get, put, join, recv, send, poll, acquire, wait, wait_for, exit
    name: str | None

    def __str__(self) -> str:
        if self.name is None:
            return "exiting, flushing its queues"
        return f"blocked in {self.op}() on '{self.name}'"


EXITING = Wait("exit", None)


class Waiter(NamedTuple):
    """What the detector needs to know of one instance."""

    name: str
    alive: bool  # running now (or about to be restarted)
    daemon: bool
    ended: str | None = None  # "exited with code 0", "was killed by SIGKILL"... when not alive


# (wait, waiting instance) -> the instances that could wake it up, or None when that
# cannot be told (then it is no deadlock).
Wakers = Callable[[Wait, str], list[str] | None]


def wakers_in(plan: Plan) -> Wakers:
    """Who could end each kind of wait, from the declared roles of the plan."""

    def wakers(wait: Wait, waiter: str) -> list[str] | None:
        if wait.name is None:  # flushing queues at exit: their readers can help
            inst = next(i for i in plan.instances if i.name == waiter)
            queues = {
                b.name
                for b in inst.bindings
                if "input" not in b.roles and plan.model(b.name).traits.queue
            }
            if not queues:
                return None  # a slow exit for some other reason: not provably stuck
            return sorted(
                {
                    i.name
                    for q in queues
                    for i, b in plan.users_of(q)
                    if i.name != waiter and ("input" in b.roles or "use" in b.roles)
                }
            )
        users = [(i.name, b) for i, b in plan.users_of(wait.name) if i.name != waiter]
        model = plan.model(wait.name)
        if model is None or not model.traits.queue:
            if model is not None and model.traits.messages and not model.duplex:
                role = "output" if wait.op in ("recv", "poll") else "input"
                return [n for n, b in users if role in b.roles]
            return [n for n, _ in users]  # locks and duplex pipes: every other user
        role = {"get": "output", "put": "input", "join": "input"}.get(wait.op, "output")
        return [n for n, b in users if role in b.roles or "use" in b.roles]

    return wakers


def find_deadlock(
    waiters: list[Waiter],
    waits: Mapping[str, Wait],
    holders: Mapping[str, str],
    wakers: Wakers,
) -> list[str] | None:
    """Explain the deadlock in words, or None when the instances can still progress.

    ``waits`` maps each blocked instance to its wait, ``holders`` each held lock to
    the instance holding it. The caller checks that progress has stood still for
    ``QUIET_S``; this function checks the rest.
    """
    by_name = {w.name: w for w in waiters}
    live = [w for w in waiters if w.alive]
    if not any(not w.daemon for w in live):
        return None
    if any(w.name not in waits for w in live if not w.daemon):
        return None
    lines = []
    for w in live:
        wait = waits.get(w.name)
        if wait is None:
            continue
        candidates = wakers(wait, w.name)
        if candidates is None:
            return None
        others = [by_name[n] for n in candidates if n in by_name]
        if any(o.alive and o.name not in waits for o in others):
            return None  # someone who can wake it is still running
        holder = holders.get(wait.name) if wait.name is not None else None
        lines.append(_explain(w, wait, others, holder, waits, by_name))
    return lines


def _explain(
    w: Waiter,
    wait: Wait,
    others: list[Waiter],
    holder: str | None,
    waits: Mapping[str, Wait],
    by_name: Mapping[str, Waiter],
) -> str:
    def status(o: Waiter) -> str:
        where = waits.get(o.name)
        if o.alive and where is not None:
            return f"'{o.name}' ({where})"
        if o.alive:
            return f"'{o.name}'"
        return f"'{o.name}' ({o.ended or 'gone'})"

    if wait.name is None:
        readers = ", ".join(status(o) for o in others) or "nobody"
        return (
            f"{w.name} returned but cannot exit until its queues are flushed into pipes "
            f"that nobody reads any more (readers: {readers})"
        )
    text = f"{w.name} waits in {wait.op}() on '{wait.name}'"
    if wait.op == "acquire" and holder is not None and holder in by_name:
        return f"{text}, held by {status(by_name[holder])}"
    if not others:
        return f"{text}, and no other instance uses it"
    if len(others) == 1:
        o = others[0]
        if not o.alive:
            return f"{text}; its only peer '{o.name}' {o.ended or 'is gone'}"
        return f"{text}; its only peer is {status(o)}"
    return f"{text}; its peers: " + ", ".join(status(o) for o in others)
