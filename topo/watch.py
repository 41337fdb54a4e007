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

from collections.abc import Callable, Mapping
from multiprocessing.sharedctypes import RawArray
from typing import Any, NamedTuple

QUIET_S = 1.0  # no progress for this long, with everyone blocked, is a deadlock

# Each instance has two cells on the board: WAIT (0 while running; else what it waits
# in, encoded by _code) and PROGRESS (completed blocking calls). One write before a
# blocking call and two after it keep the cost far below the call itself.
_WAIT, _PROGRESS = 0, 1
_FIELDS = 2
OPS = ("get", "put", "join", "recv", "send", "poll", "acquire", "wait", "wait_for", "exit")
_GET, _PUT, _JOIN, _RECV, _SEND, _POLL, _ACQUIRE, _WAIT_OP, _WAIT_FOR, _EXIT = range(len(OPS))
EXITING = -1  # the "primitive" of an instance whose target returned, still flushing queues
_PRIMS = 1 << 20


def _code(op: int, prim: int) -> float:
    return float((op + 1) * _PRIMS + prim + 1)


def _decode(code: float) -> tuple[str, int]:
    op, prim = divmod(int(code), _PRIMS)
    return OPS[op - 1], prim - 1


# Set in each instance by ``attach``; None elsewhere (the parent, a Pool worker), where
# the wrappers do nothing but delegate.
_cells: Any = None  # a memoryview of doubles over the board: faster than the ctypes array
_at = 0  # this instance's WAIT cell
_owners_at = 0
_slot = 0
_depth: dict[int, int] = {}  # rlock recursion depth per primitive, in this process


class Board:
    """The shared table: two cells per instance, one owner cell per primitive."""

    def __init__(self, instances: int, primitives: int) -> None:
        self.instances = instances
        self.primitives = primitives
        self.array = RawArray("d", instances * _FIELDS + primitives)

    def reset(self, slot: int) -> None:
        self.array[slot * _FIELDS + _WAIT] = 0.0
        base = self.instances * _FIELDS
        for p in range(self.primitives):
            if self.array[base + p] == slot + 1:
                self.array[base + p] = 0

    def snapshot(self) -> Snapshot:
        values = self.array[:]
        rows = [values[i * _FIELDS : (i + 1) * _FIELDS] for i in range(self.instances)]
        owners = [int(v) - 1 for v in values[self.instances * _FIELDS :]]
        return Snapshot(rows, owners)

    def owned_by(self, slot: int) -> list[int]:
        """The primitives (lock, rlock, condition) held by ``slot`` right now."""
        base = self.instances * _FIELDS
        return [p for p in range(self.primitives) if self.array[base + p] == slot + 1]


class Snapshot(NamedTuple):  # NamedTuples, not dataclasses: every instance imports this
    rows: list[list[float]]
    owners: list[int]  # primitive -> owning slot, or -1

    def blocked(self, slot: int) -> tuple[str, int] | None:
        """(operation, primitive) the instance is blocked in, or None."""
        code = self.rows[slot][_WAIT]
        return _decode(code) if code else None

    def operations(self, slot: int) -> int:
        """Blocking calls the instance in ``slot`` has completed."""
        return int(self.rows[slot][_PROGRESS])

    @property
    def progress(self) -> float:
        return sum(row[_PROGRESS] for row in self.rows)


def attach(board: Board, slot: int) -> None:
    """Called in an instance before its target: the wrappers write to ``board``."""
    global _cells, _at, _owners_at, _slot
    _cells = memoryview(board.array).cast("B").cast("d")
    _slot = slot
    _at = slot * _FIELDS
    _owners_at = board.instances * _FIELDS


# ----- instance side: the wrappers ----------------------------------------------------------


def _call(code: float, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn``, which may wait for ever, with the instance marked as waiting."""
    cells = _cells
    if cells is None:
        return fn(*args)
    at = _at
    cells[at] = code
    try:
        return fn(*args)
    finally:
        cells[at] = 0.0
        cells[at + 1] += 1.0


def _own(prim: int, owner: bool) -> None:
    if _cells is not None:
        _cells[_owners_at + prim] = _slot + 1 if owner else 0


def exiting() -> None:
    """The target returned: until the process is gone, it only flushes its queues.

    A queue's feeder thread must push every item into its pipe before the process
    can exit; if nobody reads that pipe any more, the process never exits. Marked as
    waiting, that case is caught by the deadlock detector like any other.
    """
    if _cells is not None:
        _cells[_at] = _code(_EXIT, EXITING)


def _forever(block: Any, timeout: Any) -> bool:
    return bool(block) and (timeout is None or timeout < 0)


class Watched:
    """Base of the wrappers: delegates everything, pickles as itself."""

    __slots__ = ("_get", "_prim", "_put", "_raw")

    def __init__(self, raw: Any, prim: int) -> None:
        self._raw = raw
        self._prim = prim
        # The codes of the hottest calls, computed once: see WatchedQueue.
        self._get = _code(_RECV if isinstance(self, WatchedConnection) else _GET, prim)
        self._put = _code(_SEND if isinstance(self, WatchedConnection) else _PUT, prim)

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

    # get and put are the hottest calls of most topologies: _call is inlined here, which
    # brings the wrapper's cost to a few hundred nanoseconds per call.

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        cells = _cells
        if cells is None or not block or timeout is not None:
            return self._raw.get(block, timeout)
        at = _at
        cells[at] = self._get
        try:
            return self._raw.get()
        finally:
            cells[at] = 0.0
            cells[at + 1] += 1.0

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        cells = _cells
        if cells is None or not block or timeout is not None:
            self._raw.put(obj, block, timeout)
            return
        at = _at
        cells[at] = self._put
        try:
            self._raw.put(obj)
        finally:
            cells[at] = 0.0
            cells[at + 1] += 1.0

    def join(self) -> None:
        _call(_code(_JOIN, self._prim), self._raw.join)


class WatchedUnboundedQueue(WatchedQueue):
    """A queue without maxsize never blocks in put: a thread feeds its pipe."""

    __slots__ = ()

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        self._raw.put(obj, block, timeout)


class WatchedSimpleQueue(Watched):
    __slots__ = ()

    def get(self) -> Any:
        return _call(self._get, self._raw.get)

    def put(self, obj: Any) -> None:
        _call(self._put, self._raw.put, obj)


class WatchedConnection(Watched):
    __slots__ = ()

    def recv(self) -> Any:
        cells = _cells
        if cells is None:
            return self._raw.recv()
        at = _at
        cells[at] = self._get
        try:
            return self._raw.recv()
        finally:
            cells[at] = 0.0
            cells[at + 1] += 1.0

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        return _call(_code(_RECV, self._prim), self._raw.recv_bytes, maxlength)

    def recv_bytes_into(self, buf: Any, offset: int = 0) -> int:
        return _call(_code(_RECV, self._prim), self._raw.recv_bytes_into, buf, offset)

    def send(self, obj: Any) -> None:
        cells = _cells
        if cells is None:
            self._raw.send(obj)
            return
        at = _at
        cells[at] = self._put
        try:
            self._raw.send(obj)
        finally:
            cells[at] = 0.0
            cells[at + 1] += 1.0

    def send_bytes(self, buf: Any, offset: int = 0, size: int | None = None) -> None:
        _call(_code(_SEND, self._prim), self._raw.send_bytes, buf, offset, size)

    def poll(self, timeout: float | None = 0.0) -> bool:
        if timeout is None:
            return _call(_code(_POLL, self._prim), self._raw.poll, None)
        return self._raw.poll(timeout)

    def fileno(self) -> int:
        return self._raw.fileno()


class WatchedLock(Watched):
    """Lock and RLock: also records the owner, so a holder's death can be named."""

    __slots__ = ()

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        if _forever(block, timeout):
            got = _call(_code(_ACQUIRE, self._prim), self._raw.acquire)
        else:
            got = self._raw.acquire(block) if timeout is None else self._raw.acquire(block, timeout)
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
            if timeout is None:
                return bool(_call(_code(_WAIT_OP, self._prim), self._raw.wait))
            return bool(self._raw.wait(timeout))
        finally:
            _own(self._prim, True)

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        _own(self._prim, False)
        try:
            if timeout is None:
                return _call(_code(_WAIT_FOR, self._prim), self._raw.wait_for, predicate)
            return self._raw.wait_for(predicate, timeout)
        finally:
            _own(self._prim, True)


class WatchedSemaphore(Watched):
    __slots__ = ()

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        if _forever(block, timeout):
            return bool(_call(_code(_ACQUIRE, self._prim), self._raw.acquire))
        if timeout is None:
            return bool(self._raw.acquire(block))
        return bool(self._raw.acquire(block, timeout))

    def release(self) -> None:
        self._raw.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class WatchedEvent(Watched):
    __slots__ = ()

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is None:
            return bool(_call(_code(_WAIT_OP, self._prim), self._raw.wait))
        return bool(self._raw.wait(timeout))


class WatchedBarrier(Watched):
    __slots__ = ()

    def wait(self, timeout: float | None = None) -> int:
        # A barrier built with a timeout is not wrapped (see Primitives.bind).
        if timeout is None:
            return int(_call(_code(_WAIT_OP, self._prim), self._raw.wait))
        return int(self._raw.wait(timeout))


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


class Waiter(NamedTuple):
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
