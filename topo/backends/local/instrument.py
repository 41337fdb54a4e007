"""Instance-side instrumentation of the local backend: who waits for what.

Every instance writes on a shared-memory ``Board`` what it is blocked in, if anything:

- A sampler thread in each instance looks at the main thread's Python stack every
  ``SAMPLE_INTERVAL_S``: inside ``Queue.get``, ``Connection.recv``, ``Event.wait``
  and the like (without a timeout) on a bound object, it writes "blocked in OP on P".
  Channels, events and barriers are handed to targets as they are: no cost per call.
- Locks and semaphores come in thin wrappers: their ``acquire`` is C code, which
  leaves no Python frame to see, so the wrapper's method is the frame; and a lock
  records its owner, so that a holder's death can be named.

The launcher reads the board for the supervisor, which decides (topo/deadlock.py);
progress comes from /proc (topo/backends/local/procfs.py). A call with a timeout, or
an instance in plain computation, sleep or other I/O, is not blocked: no false alarms.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from multiprocessing.heap import Arena
from typing import Any, NamedTuple, cast

SAMPLE_INTERVAL_S = 0.05  # how often an instance's sampler looks at its main thread
# A blocking call is within a few frames of the top of the stack (Queue.get ->
# Connection.recv_bytes -> _recv_bytes -> _recv, at most): a deep recursion is not
# walked to its bottom 20 times a second.
_SAMPLED_DEPTH = 16

# Each instance has two cells on the board: SEEN (0, or the call its sampler last saw
# the main thread wait in, encoded by _code) and EXIT (set once its target returned).
_SEEN, _EXITED = 0, 1
_FIELDS = 2
OPS = ("get", "put", "join", "recv", "send", "poll", "acquire", "wait", "wait_for", "exit")
_GET, _PUT, _JOIN, _RECV, _SEND, _POLL, _ACQUIRE, _WAIT_OP, _WAIT_FOR, _EXIT = range(len(OPS))
# The "primitive" of an instance whose target returned, still flushing its queues.
EXITING_PRIMITIVE = -1
_PRIMS = 1 << 20


def _code(op: int, prim: int) -> float:
    return float((op + 1) * _PRIMS + prim + 1)


def _decode(code: float) -> tuple[str, int]:
    op, prim = divmod(int(code), _PRIMS)
    return OPS[op - 1], prim - 1


# Set in each instance by ``attach``; None elsewhere (the parent, a Pool worker), where
# the wrappers do nothing but delegate.
_cells: Any = None  # the board's memoryview of doubles
_at = 0  # this instance's first cell
_owners_at = 0
_slot = 0
_depth: dict[int, int] = {}  # rlock recursion depth per primitive, in this process
_sampling = False  # the sampler thread runs while this is true


def _forget_board() -> None:
    # A process an instance forks (a Pool worker...) is not that instance: it must not
    # write on the instance's row, and the sampler thread did not survive the fork.
    global _cells, _sampling
    _cells = None
    _sampling = False


os.register_at_fork(after_in_child=_forget_board)


class Board:
    """The shared table: two cells per instance, one owner cell per primitive.

    Doubles in an ``Arena``, multiprocessing's own shared mapping (what ``RawArray``
    allocates from, pickled as its descriptor), read through a memoryview: without
    ``RawArray`` a spawned instance imports no ctypes nor ``sharedctypes`` (~2.3 ms of
    its CPU).
    """

    def __init__(self, instances: int, primitives: int) -> None:
        self.instances = instances
        self.primitives = primitives
        self.arena = Arena(max(1, instances * _FIELDS + primitives) * 8)
        self.array = memoryview(self.arena.buffer).cast("d")

    def __getstate__(self) -> tuple[int, int, Arena]:
        return self.instances, self.primitives, self.arena

    def __setstate__(self, state: tuple[int, int, Arena]) -> None:
        self.instances, self.primitives, self.arena = state
        self.array = memoryview(self.arena.buffer).cast("d")

    def reset(self, slot: int) -> None:
        for field in range(_FIELDS):
            self.array[slot * _FIELDS + field] = 0.0
        base = self.instances * _FIELDS
        for p in range(self.primitives):
            if self.array[base + p] == slot + 1:
                self.array[base + p] = 0

    def snapshot(self) -> Snapshot:
        values = cast(list[float], self.array.tolist())  # doubles: typeshed says int
        rows = [values[i * _FIELDS : (i + 1) * _FIELDS] for i in range(self.instances)]
        owners = [int(v) - 1 for v in values[self.instances * _FIELDS :]]
        return Snapshot(rows, owners)

    def owned_by(self, slot: int) -> list[int]:
        """The primitives (lock, rlock, condition) held by ``slot`` right now."""
        base = self.instances * _FIELDS
        return [p for p in range(self.primitives) if self.array[base + p] == slot + 1]


# NamedTuples, not dataclasses: every instance imports this module. The functional form
# takes the field types as objects: the class form's, strings under ``from __future__
# import annotations``, are each compiled by typing, in every spawned instance.
_SnapshotFields = NamedTuple(  # noqa: UP014 - see above
    "_SnapshotFields",
    [("rows", list[list[float]]), ("owners", list[int])],  # owners: primitive -> slot, or -1
)


class Snapshot(_SnapshotFields):
    __slots__ = ()

    def blocked(self, slot: int) -> tuple[str, int] | None:
        """(operation, primitive) the instance is blocked in, or None."""
        row = self.rows[slot]
        code = row[_EXITED] or row[_SEEN]
        return _decode(code) if code else None


def attach(board: Board, slot: int) -> None:
    """Called in an instance before its target: the wrappers write to ``board``."""
    global _cells, _at, _owners_at, _slot
    _cells = board.array
    _slot = slot
    _at = slot * _FIELDS
    _owners_at = board.instances * _FIELDS


# ----- instance side: the wrappers ----------------------------------------------------------


def _own(prim: int, owner: bool) -> None:
    if _cells is not None:
        _cells[_owners_at + prim] = _slot + 1 if owner else 0


def exiting() -> None:
    """The target returned: until the process is gone, it only flushes its queues.

    A queue's feeder thread must push every item into its pipe before the process
    can exit; if nobody reads that pipe any more, the process never exits. Marked as
    waiting, that case is caught by the deadlock detector like any other. Not while a
    thread of the target's is still running: the process waits for it, and it may yet
    do anything (the instance is then never called blocked).
    """
    global _sampling
    _sampling = False
    if _cells is None:
        return
    main = threading.main_thread()
    if any(t is not main and not t.daemon for t in threading.enumerate()):
        return
    _cells[_at + _EXITED] = _code(_EXIT, EXITING_PRIMITIVE)


def _forever(block: Any, timeout: Any) -> bool:
    return bool(block) and (timeout is None or timeout < 0)


class Watched:
    """Base of the wrappers: delegates everything, pickles as itself.

    A wrapper's own methods are Python frames the sampler can see while the C call
    inside them waits (see ``_blocking_calls``).
    """

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


class WatchedLock(Watched):
    """Lock: records its owner, so that a holder's death can be named."""

    __slots__ = ()

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        got = self._raw.acquire(block) if timeout is None else self._raw.acquire(block, timeout)
        if got and _cells is not None:
            _cells[_owners_at + self._prim] = _slot + 1
        return bool(got)

    def release(self) -> None:
        if _cells is not None:  # before: the next owner writes itself once it has the lock
            _cells[_owners_at + self._prim] = 0
        self._raw.release()

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        if _cells is not None:
            _cells[_owners_at + self._prim] = 0
        self._raw.release()


class WatchedRLock(WatchedLock):
    """RLock (and Condition): owned from its first acquire to its last release."""

    __slots__ = ()

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        got = self._raw.acquire(block) if timeout is None else self._raw.acquire(block, timeout)
        if got and _cells is not None:
            prim = self._prim
            depth = _depth.get(prim, 0)
            _depth[prim] = depth + 1
            if not depth:
                _cells[_owners_at + prim] = _slot + 1
        return bool(got)

    def release(self) -> None:
        if _cells is not None:
            prim = self._prim
            depth = _depth.get(prim, 1) - 1
            _depth[prim] = depth
            if depth <= 0:
                _cells[_owners_at + prim] = 0
        self._raw.release()

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()


class WatchedCondition(WatchedRLock):
    __slots__ = ()

    def wait(self, timeout: float | None = None) -> bool:
        _own(self._prim, False)  # wait() releases the lock until it wakes up
        try:
            return bool(self._raw.wait(timeout))
        finally:
            _own(self._prim, True)

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        _own(self._prim, False)
        try:
            return self._raw.wait_for(predicate, timeout)
        finally:
            _own(self._prim, True)


class WatchedSemaphore(Watched):
    """Semaphores: only so that the sampler sees a frame around the C acquire()."""

    __slots__ = ()

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        raw = self._raw
        return bool(raw.acquire(block) if timeout is None else raw.acquire(block, timeout))

    def release(self) -> None:
        self._raw.release()

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()


WRAPPERS: Mapping[str, type[Watched]] = {
    "lock": WatchedLock,
    "rlock": WatchedRLock,
    "condition": WatchedCondition,
    "semaphore": WatchedSemaphore,
    "bounded_semaphore": WatchedSemaphore,
}


# ----- instance side: the sampler ------------------------------------------------------------


def _blocking_calls() -> dict[Any, tuple[int, str]]:
    """The functions a call that can wait for ever runs in: code -> (operation, which
    arguments say it does: "block" for block=True, timeout=None; "timeout" for
    timeout=None; "" when it always does)."""
    from multiprocessing import connection  # loaded already: instances report through it

    conn = connection._ConnectionBase
    calls: dict[Any, tuple[int, str]] = {
        WatchedLock.acquire: (_ACQUIRE, "block"),
        WatchedRLock.acquire: (_ACQUIRE, "block"),
        WatchedSemaphore.acquire: (_ACQUIRE, "block"),
        WatchedCondition.wait: (_WAIT_OP, "timeout"),
        WatchedCondition.wait_for: (_WAIT_FOR, "timeout"),
        threading.Barrier.wait: (_WAIT_OP, "timeout"),  # multiprocessing's Barrier inherits it
        conn.recv: (_RECV, ""),
        conn.recv_bytes: (_RECV, ""),
        conn.recv_bytes_into: (_RECV, ""),
        conn.send: (_SEND, ""),
        conn.send_bytes: (_SEND, ""),
        conn.poll: (_POLL, "timeout"),
    }
    # The other modules are loaded by unpickling an object of theirs, if one was bound:
    # none is imported here for nothing.
    # multiprocessing's queues, and topo's over a pipe or socket (transport.py): the same
    # classes and methods, so the same rules (join is multiprocessing's own in both)
    for module in ("multiprocessing.queues", "topo.backends.local.transport"):
        queues = sys.modules.get(module)
        if queues is not None:
            calls[queues.Queue.get] = (_GET, "block")
            calls[queues.Queue.put] = (_PUT, "block")
            calls[queues.JoinableQueue.put] = (_PUT, "block")  # topo's has its own
            calls[queues.JoinableQueue.join] = (_JOIN, "")
            calls[queues.SimpleQueue.get] = (_GET, "")
            calls[queues.SimpleQueue.put] = (_PUT, "")
    synchronize = sys.modules.get("multiprocessing.synchronize")
    if synchronize is not None:
        calls[synchronize.Event.wait] = (_WAIT_OP, "timeout")
    shm = sys.modules.get("topo.backends.local.shm")  # a queue with transport: shm
    if shm is not None:
        calls.update({shm.ShmQueue.get: (_GET, "block"), shm.ShmQueue.put: (_PUT, "block")})
    managers = sys.modules.get("multiprocessing.managers")  # a queue with via: manager
    if managers is not None:
        calls[managers.BaseProxy._callmethod] = (-1, "proxy")
    return {fn.__code__: entry for fn, entry in calls.items()}


_PROXY_CALLS = {"get": (_GET, 0), "put": (_PUT, 1), "join": (_JOIN, -1)}


def _proxy_call(f_locals: Mapping[str, Any]) -> int | None:
    """The operation of a manager queue's call that waits for ever, or None."""
    known = _PROXY_CALLS.get(f_locals.get("methodname", ""))
    if known is None:
        return None
    op, block_at = known  # where block sits among the positional arguments
    args, kwds = f_locals.get("args") or (), f_locals.get("kwds") or {}
    if block_at < 0:
        return op
    block = kwds.get("block", args[block_at] if len(args) > block_at else True)
    timeout = kwds.get("timeout", args[block_at + 1] if len(args) > block_at + 1 else None)
    return op if _forever(block, timeout) else None


# Threads that never wake an instance's main thread: queues' feeders (they only move what
# was put into the pipe) and topo's own, whose names start with "topo-".
_FEEDER_THREAD = "QueueFeederThread"


def sample(watched: Mapping[int, int]) -> None:
    """Start this instance's sampler; ``watched`` maps id() of each bound object (a
    queue, a pipe end, a lock's wrapper...) to its primitive number."""
    global _sampling
    if _cells is None or not watched:
        return
    _sampling = True
    calls = _blocking_calls()
    main = threading.main_thread().ident or 0
    cells, at = _cells, _at + _SEEN

    def waiting_in(frame: Any) -> float:
        """The code of the call that can wait for ever this stack is in, or 0.0."""
        for _ in range(_SAMPLED_DEPTH):
            if frame is None:
                break
            entry = calls.get(frame.f_code)
            if entry is not None:
                f_locals = frame.f_locals
                prim = watched.get(id(f_locals.get("self")))
                if prim is not None:  # else a queue's own pipe, inside its get(): go on
                    op, forever = entry
                    if forever == "proxy":
                        proxied = _proxy_call(f_locals)
                        return 0.0 if proxied is None else _code(proxied, prim)
                    if forever == "block" and not _forever(f_locals["block"], f_locals["timeout"]):
                        return 0.0
                    if forever == "timeout" and f_locals["timeout"] is not None:
                        return 0.0
                    return _code(op, prim)
            frame = frame.f_back
        return 0.0

    def seen() -> float:
        # The collector is off while sys._current_frames() runs: before CPython 3.11.9
        # and 3.12.3 (gh-106883) it holds the thread-list lock while it allocates; a
        # collection there may run a finalizer that releases the GIL (a SemLock's calls
        # the resource tracker), and a thread that ends meanwhile takes the GIL and waits
        # for that lock: every thread of the process hangs (CI did so, in these tests).
        enabled = gc.isenabled()
        gc.disable()
        try:
            frames = sys._current_frames()
        finally:
            if enabled:  # else the target turned it off: it stays off
                gc.enable()
        # Among them this very call's frame, which holds the dict in turn: a cycle that
        # only the collector would free, with every frame of the sample in it (each
        # keeping its locals once it has returned: on Python 3.13 a BytesIO of
        # Connection.recv, whose collection prints "Exception ignored ... BufferError",
        # CPython gh-111331).
        me = threading.get_ident()
        del frames[me]
        code = waiting_in(frames.get(main))
        if not code:
            return 0.0
        # The instance is blocked only if no other thread of its own can still make
        # progress: a helper thread that computes, sleeps or waits on anything but a
        # bound channel or lock may yet wake the main thread (no false alarm, ever).
        for ident, frame in frames.items():
            if ident == main:
                continue
            thread = threading._active.get(ident)  # type: ignore[attr-defined]
            if thread is not None and thread.name.startswith((_FEEDER_THREAD, "topo-")):
                continue
            if not waiting_in(frame):
                return 0.0
        return code

    def run() -> None:
        while _sampling:
            try:
                cells[at] = seen()
            except Exception:
                # Another thread's stack is walked while it runs: a frame torn down in
                # the meantime can hand back anything as its f_back (seen in CI: a
                # cell). Such a sample tells nothing, and the sampler must live on.
                cells[at] = 0.0
            time.sleep(SAMPLE_INTERVAL_S)
        cells[at] = 0.0

    threading.Thread(target=run, name="topo-sampler", daemon=True).start()
