"""The one place that turns channel and lock specs into multiprocessing objects.

Everything is built before any process starts. One manager is started only when a
spec needs one (manager kinds, ``via: manager``, ``object``), and ``close`` shuts it
down after the final state has been read back.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import TYPE_CHECKING, Any

from topo.backends.local.drain import MAX_ITEMS, read_manager_queue, read_pipe
from topo.backends.local.instrument import WRAPPERS
from topo.backends.local.shm import SharedArray, ShmQueue, free, read_array
from topo.errors import RunError
from topo.jsonable import to_jsonable
from topo.model import (
    ArrayChannel,
    BarrierLock,
    BoundedSemaphoreLock,
    ConditionLock,
    DictChannel,
    JoinableQueueChannel,
    ListChannel,
    NamespaceChannel,
    NdarrayChannel,
    ObjectChannel,
    PipeChannel,
    QueueChannel,
    SemaphoreLock,
    SimpleQueueChannel,
    ValueChannel,
)
from topo.resolve import Instance, Plan
from topo.result import RawItem

if TYPE_CHECKING:
    from multiprocessing.managers import SyncManager


def needs_manager(plan: Plan) -> bool:
    return any(model.via_manager for _, _, model in plan.declared())


def choose_transports(plan: Plan) -> dict[str, str]:
    """Queue channel -> how its messages travel: ``mp`` (multiprocessing's own queue),
    ``socket`` or ``pipe`` (transport.py), ``shm`` (shm.py) or ``manager`` (a
    manager's queue).

    ``auto`` takes the fastest transport that keeps multiprocessing's semantics for
    the declared topology (docs/format.md, "Transports"; docs/performance.md).
    """
    chosen: dict[str, str] = {}
    for name, c in plan.spec.channels.items():
        if not c.traits.queue:
            continue
        transport = getattr(c, "transport", "auto")
        if c.via_manager:
            chosen[name] = "manager"
        elif transport != "auto":
            chosen[name] = transport
        elif sys.platform != "linux":
            chosen[name] = "mp"
        else:  # a pipe read in batches needs its one reader; a socket takes any number
            chosen[name] = "pipe" if len(plan.readers_of(name)) == 1 else "socket"
    return chosen


def _ctype(type_name: str) -> Any:
    return getattr(ctypes, type_name) if type_name.startswith("c_") else type_name


def _initial(typecode: str, value: Any) -> Any:
    if typecode in ("c", "c_char") and isinstance(value, str):
        return value.encode()
    return value


class Primitives:
    """The built channels and locks of one run, by name."""

    def __init__(self, plan: Plan, mp: BaseContext) -> None:
        self.plan = plan
        self.mp = mp
        self.manager: SyncManager | None = None
        self.objects: dict[str, Any] = {}
        self.segments: list[Any] = []  # shared memory to unlink at the end, whatever happens
        self.arrays: dict[str, Any] = {}  # ndarray channel -> its segment
        self.wired: list[Any] = []  # queues over topo's own transports (transport.py)
        # Every channel and lock in a fixed order: a primitive's number is its index.
        self.names = [name for _, name, _ in plan.declared()]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.transports = choose_transports(plan)
        if needs_manager(plan):
            from topo.backends.local.manager import start_manager

            self.manager = start_manager(plan, mp)
        # Conditions last: they wrap a lock built before them.
        locks = sorted(plan.spec.locks.items(), key=lambda kv: kv[1].kind == "condition")
        for name, model in [*plan.spec.channels.items(), *locks]:
            try:
                build = self._channel if name in plan.spec.channels else self._lock
                self.objects[name] = build(name, model)
            except Exception as e:
                self.close()
                reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                raise RunError(f"building {model.kind} {name!r} failed: {reason}") from e

    def _channel(self, name: str, c: Any) -> Any:
        mp, m = self.mp, self.manager
        via_manager = c.via_manager
        transport = self.transports.get(name)
        if transport == "shm":
            queue = ShmQueue(mp, c.capacity, c.slot_size)
            self.segments.append(queue)
            return queue
        if transport in ("socket", "pipe"):
            from topo.backends.local import transport as wires

            queue = wires.build(c.kind, transport, getattr(c, "maxsize", 0), mp)
            self.wired.append(queue)
            return queue
        if isinstance(c, QueueChannel):
            return m.Queue(c.maxsize) if via_manager and m else mp.Queue(c.maxsize)
        if isinstance(c, NdarrayChannel):
            handle, segment = SharedArray.create(c.dims, c.dtype, c.init)
            self.segments.append(segment)
            self.arrays[name] = segment
            return handle
        if isinstance(c, JoinableQueueChannel):
            return m.JoinableQueue(c.maxsize) if via_manager and m else mp.JoinableQueue(c.maxsize)
        if isinstance(c, SimpleQueueChannel):
            return mp.SimpleQueue()
        if isinstance(c, PipeChannel):
            return mp.Pipe(duplex=c.duplex)  # (receiving end, sending end) when one-way
        if isinstance(c, ValueChannel):
            init = _initial(c.typecode, c.init)
            if via_manager and m:
                return m.Value(c.typecode, init)
            return mp.Value(_ctype(c.typecode), init, lock=c.lock)
        if isinstance(c, ArrayChannel):
            init = c.init if c.init is not None else c.length
            if isinstance(init, str):
                init = list(init.encode()) if c.typecode not in ("c", "c_char") else init.encode()
            if via_manager and m:
                return m.Array(c.typecode, init if not isinstance(init, int) else [0] * init)
            return mp.Array(_ctype(c.typecode), init, lock=c.lock)
        assert m is not None, "manager kinds need the manager"
        if isinstance(c, DictChannel):
            return m.dict(c.init)
        if isinstance(c, ListChannel):
            return m.list(c.init)
        if isinstance(c, NamespaceChannel):
            return m.Namespace(**c.init)
        if isinstance(c, ObjectChannel):
            return getattr(m, f"topo_object_{name}")(**c.args)
        raise AssertionError(f"unknown channel kind {c.kind}")  # pragma: no cover

    def _lock(self, name: str, lock: Any) -> Any:
        src: Any = self.manager if lock.via_manager else self.mp
        kind = lock.kind
        if isinstance(lock, SemaphoreLock | BoundedSemaphoreLock):
            return (src.Semaphore if kind == "semaphore" else src.BoundedSemaphore)(lock.value)
        if isinstance(lock, ConditionLock):
            return src.Condition(self.objects[lock.lock] if lock.lock else None)
        if isinstance(lock, BarrierLock):
            return src.Barrier(self.plan.barrier_parties[name], timeout=lock.timeout)
        factory = {"lock": "Lock", "rlock": "RLock", "event": "Event"}[kind]
        return getattr(src, factory)()

    def bind(self, instance: Instance, *, watch: bool = False) -> dict[str, Any]:
        """The keyword arguments that hand ``instance`` its channels and locks.

        With ``watch``, locks and semaphores come wrapped for the deadlock detector
        (everything else is watched as it is by each instance's sampler: ``sampled``).
        """
        bound = {}
        for b in instance.bindings:
            obj = self.objects[b.name]
            obj = obj[b.end] if b.end is not None else obj
            model = self.plan.model(b.name)
            wrapper = WRAPPERS.get(model.kind)
            if watch and wrapper and not model.waits_by_itself:
                obj = wrapper(obj, self.index[b.name])
            bound[b.param] = obj
        return bound

    def sampled(self, instance: Instance) -> dict[str, int]:
        """What the instance's sampler watches: parameter -> primitive number.

        Not a barrier built with a timeout: its waits end by themselves.
        """
        return {
            b.param: self.index[b.name]
            for b in instance.bindings
            if self.plan.model(b.name).watched
        }

    def pipe_ends(self, name: str) -> tuple[Connection, ...]:
        obj = self.objects.get(name)
        return tuple(obj) if isinstance(obj, tuple) else ()

    def drain(self, deadline: float) -> dict[str, list[Any]]:
        """What is left in every queue and one-way pipe, by channel (see drain.py).

        A duplex pipe is not read: the parent cannot keep an end of it open without
        keeping its users from seeing EOFError.
        """
        left: dict[str, list[Any]] = {}
        for name, c in self.plan.spec.channels.items():
            obj: Any = self.objects.get(name)
            if not c.traits.messages or obj is None:
                continue
            try:
                items = self._drain_one(c, obj, deadline)
            except Exception as e:  # never worth failing the end of a run for
                items = [RawItem(b"", f"could not be read: {type(e).__name__}: {e}")]
            if items:
                left[name] = items
        return left

    @staticmethod
    def _drain_one(c: Any, obj: Any, deadline: float) -> list[Any]:
        if isinstance(obj, ShmQueue):
            return obj.drain(MAX_ITEMS)
        if hasattr(obj, "drain"):  # topo's own transports
            return obj.drain(MAX_ITEMS, deadline)
        if c.via_manager:
            return read_manager_queue(obj, deadline)
        if isinstance(obj, tuple):  # a pipe: (receiving end, sending end) if one-way
            receiving = obj[0]
            if getattr(c, "duplex", True) or receiving.closed:
                return []
            return read_pipe(receiving.fileno(), deadline)
        return read_pipe(obj._reader.fileno(), deadline)

    def shared_names(self) -> list[str]:
        """The names in /dev/shm of this run's semaphores and segments, found in the
        objects themselves (a listing of /dev/shm would take another run's too)."""
        from multiprocessing.synchronize import SemLock

        names: set[str] = set()
        seen: set[int] = set()

        def walk(obj: Any, depth: int) -> None:
            if depth > 4 or id(obj) in seen or obj is None:
                return
            seen.add(id(obj))
            if isinstance(obj, SemLock):
                # None where the name was unlinked at once (fork)
                name = getattr(getattr(obj, "_semlock", None), "name", None)
                if name:
                    names.add("sem." + name.lstrip("/"))
                return
            if isinstance(obj, tuple | list):
                for item in obj:
                    walk(item, depth + 1)
                return
            shm_name = getattr(obj, "_name", None) if type(obj).__name__ == "SharedMemory" else None
            if isinstance(shm_name, str):
                names.add(shm_name.lstrip("/"))
            for value in getattr(obj, "__dict__", {}).values():
                walk(value, depth + 1)

        for obj in [*self.objects.values(), *self.segments]:
            walk(obj, 0)
        for queue in self.wired:  # files of big messages: a prefix ending in "*"
            pattern = queue.shared_files()
            if pattern:
                names.add(pattern)
        return sorted(names)

    def depths(self) -> dict[str, int]:
        """Queue -> items in it now; queues that cannot tell (SimpleQueue) are left out."""
        out: dict[str, int] = {}
        for name, c in self.plan.spec.channels.items():
            qsize = getattr(self.objects.get(name), "qsize", None)
            if not c.traits.queue or qsize is None:
                continue
            # Left out rather than guessed: qsize() raises NotImplementedError on macOS
            # (no sem_getvalue), and OSError or EOFError once a manager has gone.
            with contextlib.suppress(NotImplementedError, OSError, EOFError):
                out[name] = int(qsize())
        return out

    def read_state(self) -> dict[str, Any]:
        """The final contents of every value, array, dict, list and namespace channel."""
        state: dict[str, Any] = {}
        for name, c in self.plan.spec.channels.items():
            obj: Any = self.objects.get(name)
            try:
                # Shared ctypes are read without their lock: a stopped instance may
                # have died holding it, and every writer has ended by now.
                if c.kind == "value":
                    raw = obj.get_obj() if hasattr(obj, "get_obj") else obj
                    state[name] = to_jsonable(raw.value)
                elif c.kind == "array":
                    raw = obj.get_obj() if hasattr(obj, "get_obj") else obj
                    state[name] = to_jsonable(raw[:])
                elif c.kind == "dict":
                    state[name] = to_jsonable(obj.copy())
                elif c.kind == "list":
                    state[name] = to_jsonable(obj[:])
                elif c.kind == "namespace":
                    state[name] = to_jsonable(vars(obj._getvalue()))
                elif c.kind == "ndarray":
                    state[name] = read_array(obj, self.arrays[name])
            except Exception as e:
                state[name] = f"<unreadable: {type(e).__name__}: {e}>"
        return state

    def close(self) -> None:
        for name in self.plan.spec.channels:
            for end in self.pipe_ends(name):
                end.close()
        for queue in self.wired:
            queue.free()
        self.wired.clear()
        for segment in self.segments:
            free(segment)
        self.segments.clear()
        self.arrays.clear()
        self.objects.clear()
        if self.manager is not None:
            self.manager.shutdown()
            self.manager = None
