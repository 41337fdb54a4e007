"""The deadlock detector's reasoning: backend-neutral, pure, over names.

A backend reports who waits for what (``Wait``: an operation on a named channel or
lock, in an instance that has not returned yet) and who holds which lock. The
supervisor declares a deadlock when every live non-daemon instance is blocked,
everyone who could wake each of them is blocked or gone, and nothing has
progressed for ``QUIET_S`` (the backend measures progress). ``find_deadlock``
checks the first two and explains the deadlock in words.
"""

from __future__ import annotations

import re
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
    ``QUIET_S``; this function checks the rest. Replicas of one process in the same
    wait share one line, so that the explanation stays short at any scale.
    """
    by_name = {w.name: w for w in waiters}
    live = [w for w in waiters if w.alive]
    if not any(not w.daemon for w in live):
        return None
    if any(w.name not in waits for w in live if not w.daemon):
        return None
    groups: dict[tuple[str, Wait], list[tuple[Waiter, list[Waiter]]]] = {}
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
        groups.setdefault((_process(w.name), wait), []).append((w, others))
    explain = _Explainer(waits, holders, by_name)
    return [explain.group(wait, members) for (_, wait), members in groups.items()]


_REPLICA = re.compile(r"^(.*)\[(\d+)\]$")


def _process(name: str) -> str:
    m = _REPLICA.match(name)
    return m.group(1) if m else name


def _spans(numbers: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> ``0..2,5,7..8``."""
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ",".join(str(a) if a == b else f"{a}..{b}" for a, b in spans)


def group_name(names: list[str]) -> str:
    """``worker[0..3]`` for the names of some replicas of one process."""
    if len(names) == 1:
        return names[0]
    replicas = [int(m.group(2)) for n in names if (m := _REPLICA.match(n))]
    return f"{_process(names[0])}[{_spans(replicas)}]"


class _Explainer:
    def __init__(
        self, waits: Mapping[str, Wait], holders: Mapping[str, str], by_name: Mapping[str, Waiter]
    ) -> None:
        self.waits, self.holders, self.by_name = waits, holders, by_name

    def status(self, o: Waiter) -> str:
        where = self.waits.get(o.name)
        if o.alive and where is not None:
            return f"({where})"
        if o.alive:
            return ""
        return f"({o.ended or 'gone'})"

    def peers(self, others: list[Waiter]) -> str:
        """``'a' (blocked in get() on 'q'), 'w[0..9]' (exited with code 0)``."""
        grouped: dict[tuple[str, str], list[str]] = {}
        for o in others:
            grouped.setdefault((_process(o.name), self.status(o)), []).append(o.name)
        return ", ".join(
            f"'{group_name(names)}'" + (f" {status}" if status else "")
            for (_, status), names in grouped.items()
        )

    def group(self, wait: Wait, members: list[tuple[Waiter, list[Waiter]]]) -> str:
        if len(members) == 1:
            w, others = members[0]
            return self.line(w.name, False, wait, others)
        names = [w.name for w, _ in members]
        inside = set(names)
        outside = {o.name: o for _, peers in members for o in peers if o.name not in inside}
        return self.line(group_name(names), True, wait, list(outside.values()))

    def line(self, who: str, many: bool, wait: Wait, others: list[Waiter]) -> str:
        """One line on ``who`` (one instance, or ``many`` replicas in the same wait)."""
        its, waits = ("their", "wait") if many else ("its", "waits")
        if wait.name is None:
            readers = self.peers(others) or "nobody"
            return (
                f"{who} returned but cannot exit until {its} queues are flushed into pipes "
                f"that nobody reads any more (readers: {readers})"
            )
        text = f"{who} {waits} in {wait.op}() on '{wait.name}'"
        holder = self.holders.get(wait.name)
        if wait.op == "acquire" and holder is not None and holder in self.by_name:
            return f"{text}, held by {self.peers([self.by_name[holder]])}"
        if not others:
            return f"{text}, and no other instance " + ("can wake them" if many else "uses it")
        if not many and len(others) == 1:
            o = others[0]
            if not o.alive:
                return f"{text}; its only peer '{o.name}' {o.ended or 'is gone'}"
            return f"{text}; its only peer is {self.peers(others)}"
        return f"{text}; {its} peers: {self.peers(others)}"
