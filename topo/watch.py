"""Run-time instrumentation and the deadlock detector.

Targets receive thin wrappers around their channels and locks, with the same methods.
Around each call that can block for ever, a wrapper writes into a shared-memory
``Board`` "instance I is blocked in OP on primitive P since T"; each completed call
bumps the instance's progress counter; a lock or rlock records its owner. Writing a
few doubles into shared memory costs far less than the operation itself.

The supervisor reads the board. ``find_deadlock`` declares a deadlock when every live
non-daemon instance is blocked, everyone who could wake each of them is blocked or
gone, and nothing has progressed for ``QUIET_S``: then it explains the wait-for
graph in words. A call with a timeout, or an instance in plain computation, sleep
or other I/O, is not blocked: no false alarms.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.sharedctypes import RawArray
from typing import Any

QUIET_S = 1.0  # no progress for this long, with everyone blocked, is a deadlock

# Per-instance fields on the board.
_STATE, _OP, _PRIM, _SINCE, _PROGRESS = range(5)
_FIELDS = 5
RUNNING, BLOCKED = 0.0, 1.0
OPS = ("get", "put", "join", "recv", "send", "poll", "acquire", "wait", "wait_for", "exit")
EXITING = -1  # the "primitive" of an instance whose target returned, still flushing queues

# Set in each instance by ``attach``; None elsewhere (the parent, a Pool worker), where
# the wrappers do nothing but delegate.
_board: Any = None
_base = 0
_owners_base = 0
_slot = 0
_depth: dict[int, int] = {}  # rlock recursion depth per primitive, in this process


class Board:
    """The shared table: one row per instance, one owner cell per primitive."""

    def __init__(self, instances: int, primitives: int, array: Any = None) -> None:
        self.instances = instances
        self.primitives = primitives
        size = instances * _FIELDS + primitives
        self.array = array if array is not None else RawArray("d", size)

    def reset(self, slot: int) -> None:
        base = slot * _FIELDS
        self.array[base + _STATE] = RUNNING
        for p in range(self.primitives):
            if self.array[self.instances * _FIELDS + p] == slot + 1:
                self.array[self.instances * _FIELDS + p] = 0

    def snapshot(self) -> Snapshot:
        values = self.array[:]
        rows = [values[i * _FIELDS : (i + 1) * _FIELDS] for i in range(self.instances)]
        owners = [int(v) - 1 for v in values[self.instances * _FIELDS :]]
        return Snapshot(rows, owners)

    def owned_by(self, slot: int) -> list[int]:
        """The primitives (lock, rlock, condition) held by ``slot`` right now."""
        base = self.instances * _FIELDS
        return [p for p in range(self.primitives) if self.array[base + p] == slot + 1]


@dataclass(frozen=True)
class Snapshot:
    rows: list[list[float]]
    owners: list[int]  # primitive -> owning slot, or -1

    def blocked(self, slot: int) -> tuple[str, int] | None:
        """(operation, primitive) the instance is blocked in, or None."""
        row = self.rows[slot]
        if row[_STATE] != BLOCKED:
            return None
        return OPS[int(row[_OP])], int(row[_PRIM])

    def operations(self, slot: int) -> int:
        """Operations the instance in ``slot`` has completed."""
        return int(self.rows[slot][_PROGRESS])

    @property
    def progress(self) -> float:
        return sum(row[_PROGRESS] for row in self.rows)


def attach(board: Board, slot: int) -> None:
    """Called in an instance before its target: the wrappers write to ``board``."""
    global _board, _base, _owners_base, _slot
    _board, _slot = board.array, slot
    _base = slot * _FIELDS
    _owners_base = board.instances * _FIELDS


# ----- instance side: the wrappers ----------------------------------------------------------


def _blocked(op: int, prim: int) -> None:
    b = _board
    if b is not None:
        base = _base
        b[base + _OP] = op
        b[base + _PRIM] = prim
        b[base + _SINCE] = time.monotonic()
        b[base + _STATE] = BLOCKED


def _done() -> None:
    b = _board
    if b is not None:
        b[_base + _STATE] = RUNNING
        b[_base + _PROGRESS] += 1


def _own(prim: int, owner: bool) -> None:
    if _board is not None:
        _board[_owners_base + prim] = _slot + 1 if owner else 0


_GET, _PUT, _JOIN, _RECV, _SEND, _POLL, _ACQUIRE, _WAIT, _WAIT_FOR, _EXIT = range(len(OPS))


def exiting() -> None:
    """The target returned: until the process is gone, it only flushes its queues.

    A queue's feeder thread must push every item into its pipe before the process
    can exit; if nobody reads that pipe any more, the process never exits. Marked as
    blocked, that case is caught by the deadlock detector like any other wait.
    """
    _blocked(_EXIT, EXITING)


def _call(op: int, prim: int, forever: bool, fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
    """Run ``fn``; mark the instance blocked while it runs if it may wait for ever."""
    if forever:
        _blocked(op, prim)
    try:
        return fn(*a, **kw)
    finally:
        _done()


def _forever(block: Any = True, timeout: Any = None) -> bool:
    return bool(block) and (timeout is None or timeout < 0)


class Watched:
    """Base of the wrappers: delegates everything, pickles as itself."""

    __slots__ = ("_prim", "_raw")

    def __init__(self, raw: Any, prim: int) -> None:
        self._raw = raw
        self._prim = prim

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._raw, attr)

    def __reduce__(self) -> Any:
        return (type(self), (self._raw, self._prim))

    def __repr__(self) -> str:
        return f"<watched {self._raw!r}>"

    @property
    def unwrapped(self) -> Any:
        """The multiprocessing object itself."""
        return self._raw


class WatchedQueue(Watched):
    __slots__ = ()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return _call(_GET, self._prim, _forever(block, timeout), self._raw.get, block, timeout)

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        _call(_PUT, self._prim, _forever(block, timeout), self._raw.put, obj, block, timeout)

    def join(self) -> None:
        _call(_JOIN, self._prim, True, self._raw.join)

    def task_done(self) -> None:
        _call(_JOIN, self._prim, False, self._raw.task_done)


class WatchedSimpleQueue(Watched):
    __slots__ = ()

    def get(self) -> Any:
        return _call(_GET, self._prim, True, self._raw.get)

    def put(self, obj: Any) -> None:
        _call(_PUT, self._prim, True, self._raw.put, obj)


class WatchedConnection(Watched):
    __slots__ = ()

    def recv(self) -> Any:
        return _call(_RECV, self._prim, True, self._raw.recv)

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        return _call(_RECV, self._prim, True, self._raw.recv_bytes, maxlength)

    def recv_bytes_into(self, buf: Any, offset: int = 0) -> int:
        return _call(_RECV, self._prim, True, self._raw.recv_bytes_into, buf, offset)

    def send(self, obj: Any) -> None:
        _call(_SEND, self._prim, True, self._raw.send, obj)

    def send_bytes(self, buf: Any, offset: int = 0, size: int | None = None) -> None:
        _call(_SEND, self._prim, True, self._raw.send_bytes, buf, offset, size)

    def poll(self, timeout: float | None = 0.0) -> bool:
        return _call(_POLL, self._prim, timeout is None, self._raw.poll, timeout)

    def fileno(self) -> int:
        return self._raw.fileno()


class WatchedLock(Watched):
    """Lock and RLock: also records the owner, so a holder's death can be named."""

    __slots__ = ()

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        args = (block,) if timeout is None else (block, timeout)
        got = _call(_ACQUIRE, self._prim, _forever(block, timeout), self._raw.acquire, *args)
        if got:
            _depth[self._prim] = _depth.get(self._prim, 0) + 1
            _own(self._prim, True)
        return bool(got)

    def release(self) -> None:
        self._raw.release()
        _depth[self._prim] = _depth.get(self._prim, 1) - 1
        if _depth[self._prim] <= 0:
            _own(self._prim, False)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class WatchedCondition(WatchedLock):
    __slots__ = ()

    def wait(self, timeout: float | None = None) -> bool:
        _own(self._prim, False)  # wait() releases the lock until it wakes up
        try:
            return _call(_WAIT, self._prim, timeout is None, self._raw.wait, timeout)
        finally:
            _own(self._prim, True)

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        _own(self._prim, False)
        try:
            return _call(
                _WAIT_FOR, self._prim, timeout is None, self._raw.wait_for, predicate, timeout
            )
        finally:
            _own(self._prim, True)

    def notify(self, n: int = 1) -> None:
        _call(_WAIT, self._prim, False, self._raw.notify, n)

    def notify_all(self) -> None:
        _call(_WAIT, self._prim, False, self._raw.notify_all)


class WatchedSemaphore(Watched):
    __slots__ = ()

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        args = (block,) if timeout is None else (block, timeout)
        return bool(_call(_ACQUIRE, self._prim, _forever(block, timeout), self._raw.acquire, *args))

    def release(self) -> None:
        _call(_ACQUIRE, self._prim, False, self._raw.release)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class WatchedEvent(Watched):
    __slots__ = ()

    def wait(self, timeout: float | None = None) -> bool:
        return bool(_call(_WAIT, self._prim, timeout is None, self._raw.wait, timeout))

    def set(self) -> None:
        _call(_WAIT, self._prim, False, self._raw.set)


class WatchedBarrier(Watched):
    __slots__ = ()

    def wait(self, timeout: float | None = None) -> int:
        # A barrier built with a timeout is not wrapped (see Primitives.bind).
        return _call(_WAIT, self._prim, timeout is None, self._raw.wait, timeout)


WRAPPERS: Mapping[str, type[Watched]] = {
    "queue": WatchedQueue,
    "joinable_queue": WatchedQueue,
    "simple_queue": WatchedSimpleQueue,
    "pipe": WatchedConnection,
    "lock": WatchedLock,
    "rlock": WatchedLock,
    "condition": WatchedCondition,
    "semaphore": WatchedSemaphore,
    "bounded_semaphore": WatchedSemaphore,
    "event": WatchedEvent,
    "barrier": WatchedBarrier,
}
OWNED_KINDS = frozenset({"lock", "rlock", "condition"})


# ----- supervisor side: the detector ---------------------------------------------------------


@dataclass(frozen=True)
class Waiter:
    """What the detector needs to know of one instance."""

    name: str
    slot: int
    alive: bool  # running now (or about to be restarted)
    daemon: bool
    ended: str | None = None  # "exited 0", "was killed by SIGKILL"... when not alive


# (primitive, operation, waiting instance) -> the instances that could wake it up, or
# None when that cannot be told (then it is no deadlock).
Wakers = Callable[[int, str, str], list[str] | None]


def describe(where: tuple[str, int], names: list[str]) -> str:
    """``blocked in get() on 'tasks'`` for a Snapshot.blocked() answer."""
    op, prim = where
    if prim == EXITING:
        return "exiting, flushing its queues"
    return f"blocked in {op}() on '{names[prim]}'"


def find_deadlock(
    waiters: list[Waiter],
    snapshot: Snapshot,
    wakers: Wakers,
    names: list[str],
) -> list[str] | None:
    """Explain the deadlock in words, or None when the instances can still progress.

    ``names`` maps a primitive index to its channel or lock name. The caller checks
    that progress has stood still for ``QUIET_S``; this function checks the rest.
    """
    by_name = {w.name: w for w in waiters}
    live = [w for w in waiters if w.alive]
    if not any(not w.daemon for w in live):
        return None
    blocked = {w.name: snapshot.blocked(w.slot) for w in live}
    if any(b is None for w, b in zip(live, blocked.values(), strict=True) if not w.daemon):
        return None
    lines = []
    for w in live:
        where = blocked[w.name]
        if where is None:
            continue
        op, prim = where
        candidates = wakers(prim, op, w.name)
        if candidates is None:
            return None
        others = [by_name[n] for n in candidates if n in by_name]
        if any(o.alive and blocked.get(o.name) is None for o in others):
            return None  # someone who can wake it is still running
        owner = snapshot.owners[prim] if 0 <= prim < len(snapshot.owners) else -1
        lines.append(_explain(w, op, prim, others, owner, blocked, waiters, names))
    return lines


def _explain(
    w: Waiter,
    op: str,
    prim: int,
    others: list[Waiter],
    owner: int,
    blocked: dict[str, tuple[str, int] | None],
    waiters: list[Waiter],
    names: list[str],
) -> str:
    def status(o: Waiter) -> str:
        where = blocked.get(o.name)
        if o.alive and where is not None:
            return f"'{o.name}' ({describe(where, names)})"
        if o.alive:
            return f"'{o.name}'"
        return f"'{o.name}' ({o.ended or 'gone'})"

    if op == "exit":
        queues = "its queues"
        readers = ", ".join(status(o) for o in others) or "nobody"
        return (
            f"{w.name} returned but cannot exit until {queues} are flushed into pipes "
            f"that nobody reads any more (readers: {readers})"
        )
    text = f"{w.name} waits in {op}() on '{names[prim]}'"
    if op == "acquire" and owner >= 0:
        holder = next((o for o in waiters if o.slot == owner), None)
        if holder is not None:
            return f"{text}, held by {status(holder)}"
    if not others:
        return f"{text}, and no other instance uses it"
    if len(others) == 1:
        o = others[0]
        if not o.alive:
            return f"{text}; its only peer '{o.name}' {o.ended or 'is gone'}"
        return f"{text}; its only peer is {status(o)}"
    return f"{text}; its peers: " + ", ".join(status(o) for o in others)
