"""What a target receives on Ray: objects with multiprocessing's API, over the hub.

Each proxy names its channel or lock and holds the hub's actor handle; it pickles into
a task's arguments like any object. Operations block where multiprocessing's block,
with the timeouts enforced by the hub, and raise what multiprocessing raises
(``queue.Empty``, ``queue.Full``, ``EOFError``, ``BrokenPipeError``,
``threading.BrokenBarrierError``, ``ValueError`` on a lock released too often).

One Ray call costs about a millisecond, so queues move messages in batches where that
keeps their semantics: a writer to an unbounded queue hands items to a feeder thread
that sends everything pending in one call (multiprocessing's own queue has a feeder
thread too), and the one reader of a queue takes every item waiting in one call. A
bounded queue's put waits for the hub's answer, which is what keeps ``maxsize``.
"""

from __future__ import annotations

import collections
import contextlib
import pickle
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import ray

from topo.backends.ray.hub import BATCH, BROKEN, EMPTY, EOF, OK

_instance = "driver"  # set by the task wrapper: the instance these proxies act for
_feeders: list[_Feeder] = []  # every feeder started in this process, flushed at the end

FOREVER = 10.0**9
CREDIT_IDLE_S = 0.01  # room a bounded queue's writer leaves unused this long goes back
CREDITS_AT_ONCE = 64  # at most this much room asked for at once (and half of maxsize)
BIG_BYTES = 1 << 20  # items this big travel through Ray's object store, not the hub
NAMESPACE = "topo"  # the Ray namespace of every run's actors


def set_instance(name: str) -> None:
    global _instance
    _instance = name


def who() -> str:
    """The caller, as locks know their owners: instance and thread."""
    return f"{_instance}/{threading.get_ident()}"


def _dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _get(ref: Any) -> Any:
    return ray.get(ref)


_handles: dict[str, Any] = {}  # actor name -> its handle, in this process
_handles_pid = 0


def handle(actor: str) -> Any:
    """The run's actor called ``actor``, found by name: a proxy pickles as names, so
    that a process an instance starts itself (a ``multiprocessing.Pool`` worker) can
    use it too, connecting to the cluster on first use (``$TOPO_RAY_ADDRESS``)."""
    global _handles_pid
    import os

    if _handles_pid != os.getpid():
        if _handles_pid and ray.is_initialized():
            raise RuntimeError(
                "a topo channel on Ray cannot be used in a process forked from an instance: "
                "Ray workers cannot fork (multiprocessing.get_context('spawn') can)"
            )
        _handles.clear()
        _handles_pid = os.getpid()
    found = _handles.get(actor)
    if found is None:
        if not ray.is_initialized():
            import logging

            ray.init(
                address=os.environ.get("TOPO_RAY_ADDRESS", "auto"),
                namespace=NAMESPACE,
                log_to_driver=False,
                logging_level=logging.ERROR,
            )
        found = _handles[actor] = ray.get_actor(actor, namespace=NAMESPACE)
    return found


class _OnHub:
    """A proxy of something the hub holds: the hub's name and the thing's."""

    def __init__(self, hub: str, name: str) -> None:
        self._hub_name, self._name = hub, name

    @property
    def _hub(self) -> Any:
        return handle(self._hub_name)


class _Feeder:
    """Sends what a writer puts into one queue, in order, many items a call.

    For a bounded queue it also keeps the room the hub promised this writer
    (``credits``): a put takes one without a call, and asks the hub for more only when
    none is left, waiting there as a put on a full queue waits. Room left unused for
    ``CREDIT_IDLE_S`` goes back, so that it never stays promised to an idle writer.
    """

    def __init__(self, hub: Any, name: str, bounded: bool) -> None:
        self.hub, self.name, self.bounded = hub, name, bounded
        self.pending: list[Any] = []
        self.busy = False
        self.credits = 0
        self.last_put = 0.0
        self.big: list[Any] = []  # refs of big items this writer owns, adopted at the end
        self.error: BaseException | None = None
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._run, name=f"topo-feeder-{name}", daemon=True)
        self.thread.start()
        _feeders.append(self)

    def add(self, item: Any) -> None:
        with self.changed:
            if self.error is not None:
                raise self.error
            self.pending.append(item)
            self.last_put = time.monotonic()
            self.changed.notify_all()

    def take_credit(self) -> bool:
        with self.changed:
            if self.credits > 0:
                self.credits -= 1
                return True
            return False

    def give_credits(self, count: int) -> None:
        with self.changed:
            self.credits += count

    def _run(self) -> None:
        while True:
            with self.changed:
                while not self.pending:
                    if self.credits and time.monotonic() - self.last_put > CREDIT_IDLE_S:
                        self._return_credits()
                    self.changed.wait(CREDIT_IDLE_S if self.credits else None)
                batch, self.pending = self.pending, []
                self.busy = True
            try:
                owner = _instance if self.bounded else None
                ray.get(self.hub.put_many.remote(self.name, batch, owner))
            except BaseException as e:
                with self.changed:
                    self.error = e
                    self.busy = False
                    self.changed.notify_all()
                return
            with self.changed:
                self.busy = False
                self.changed.notify_all()

    def _return_credits(self) -> None:
        count, self.credits = self.credits, 0
        with contextlib.suppress(Exception):
            self.hub.unreserve.remote(self.name, _instance, count)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything put so far is in the hub; False if time ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.changed:
            while (self.pending or self.busy) and self.error is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.changed.wait(left)
        return True

    def finish(self, timeout: float | None) -> bool:
        """The writer is ending: everything sent, unused room given back, and the big
        items still queued handed over to the hub (they would go with this worker)."""
        done = self.flush(timeout)
        with self.changed:
            if self.credits:
                self._return_credits()
        if self.big:
            with contextlib.suppress(Exception):
                ray.get(self.hub.adopt.remote(self.name, self.big), timeout=timeout)
            self.big = []
        return done


def flush_all(timeout: float | None = None) -> bool:
    """Every feeder of this process has sent what it was given (at an instance's end)."""
    return all([f.finish(timeout) for f in list(_feeders)])


def _is_big(obj: Any) -> bool:
    """Worth Ray's object store rather than pickling through the hub: a large buffer."""
    nbytes = getattr(obj, "nbytes", None)
    if nbytes is None and isinstance(obj, bytes | bytearray):
        nbytes = len(obj)
    return isinstance(nbytes, int) and nbytes >= BIG_BYTES


def _loaded(item: Any) -> Any:
    """A queued item as the reader gets it: unpickled, or fetched from the object store
    (as a writable copy: a reader may change what it got, as with multiprocessing)."""
    if isinstance(item, list):
        value: Any = ray.get(item[0])
        if getattr(value, "flags", None) is not None and not value.flags.writeable:
            value = value.copy()
        elif isinstance(value, memoryview):
            value = bytes(value)
        return value
    return pickle.loads(item)


class Queue(_OnHub):
    """``multiprocessing.Queue`` (and SimpleQueue, and with ``joinable`` JoinableQueue).

    ``readers`` is how many instances read it: a lone reader takes what is waiting in
    one call, several take a fair share each; what a reader took and did not use goes
    back to the queue when it ends (``untaken``).
    """

    def __init__(
        self, hub: str, name: str, maxsize: int = 0, joinable: bool = False, readers: int = 1
    ) -> None:
        super().__init__(hub, name)
        self._maxsize = maxsize
        self._joinable = joinable
        self._readers = readers
        self._setup()

    def _setup(self) -> None:
        self._feeder: _Feeder | None = None
        self._taken: collections.deque[Any] = collections.deque()

    def __getstate__(self) -> tuple[Any, ...]:
        return (self._hub_name, self._name, self._maxsize, self._joinable, self._readers)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._hub_name, self._name, self._maxsize, self._joinable, self._readers = state
        self._setup()

    def __repr__(self) -> str:
        return f"<topo ray queue {self._name!r}>"

    def _flush(self) -> None:
        if self._feeder is not None:
            self._feeder.flush()

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        if self._feeder is None:
            self._feeder = _Feeder(self._hub, self._name, bounded=self._maxsize > 0)
        feeder = self._feeder
        if self._maxsize > 0 and not feeder.take_credit():
            want = max(1, min(CREDITS_AT_ONCE, self._maxsize // 2))
            granted = _get(self._hub.reserve.remote(self._name, who(), want, block, timeout))
            if not granted:
                raise queue.Full
            feeder.give_credits(granted - 1)
        if _is_big(obj):
            ref = ray.put(obj)
            feeder.big.append(ref)
            feeder.add([ref])  # in a list: Ray passes it on as a reference
        else:
            feeder.add(_dumps(obj))

    def put_nowait(self, obj: Any) -> None:
        self.put(obj, False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        self._flush()
        if not self._taken:
            status, items = _get(
                self._hub.get_many.remote(self._name, who(), block, timeout, BATCH, self._readers)
            )
            if status == EMPTY:
                raise queue.Empty
            self._taken.extend(items)
        return _loaded(self._taken.popleft())

    def get_nowait(self) -> Any:
        return self.get(False)

    def qsize(self) -> int:
        self._flush()
        return int(_get(self._hub.qsize.remote(self._name))) + len(self._taken)

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        self._flush()
        return bool(_get(self._hub.full.remote(self._name)))

    def task_done(self) -> None:
        if not self._joinable:
            raise AttributeError("'Queue' object has no attribute 'task_done'")
        self._flush()  # what this instance put counts before its task_done()
        if _get(self._hub.task_done.remote(self._name)) != OK:
            raise ValueError("task_done() called too many times")

    def join(self) -> None:
        if not self._joinable:
            raise AttributeError("'Queue' object has no attribute 'join'")
        self._flush()
        _get(self._hub.join.remote(self._name, who()))

    def close(self) -> None:
        self._flush()

    def join_thread(self) -> None:
        self._flush()

    def cancel_join_thread(self) -> None:
        pass

    def untaken(self) -> list[Any]:
        """What this reader took and did not return yet (given back when it stops)."""
        items, self._taken = list(self._taken), collections.deque()
        return items


class PipeEnd(_OnHub):
    """One end of ``multiprocessing.Pipe``: ``send``, ``recv``, ``poll``, ``close``."""

    def __init__(self, hub: str, name: str, end: int, readable: bool, writable: bool) -> None:
        super().__init__(hub, name)
        self._end = end
        self.readable, self.writable = readable, writable
        self.closed = False

    def __repr__(self) -> str:
        return f"<topo ray pipe end {self._name!r}[{self._end}]>"

    def _check(self, writing: bool) -> None:
        if self.closed:
            raise OSError("handle is closed")
        if writing and not self.writable:
            raise OSError("connection is read-only")
        if not writing and not self.readable:
            raise OSError("connection is write-only")

    def send(self, obj: Any) -> None:
        self._check(True)
        if _get(self._hub.send.remote(self._name, self._end, _dumps(obj))) == BROKEN:
            raise BrokenPipeError(32, "Broken pipe")

    def send_bytes(self, buf: bytes, offset: int = 0, size: int | None = None) -> None:
        data = bytes(memoryview(buf)[offset : None if size is None else offset + size])
        self.send(_RawBytes(data))

    def recv(self) -> Any:
        self._check(False)
        status, data = _get(self._hub.recv.remote(self._name, who(), self._end))
        if status == EOF:
            raise EOFError
        obj = pickle.loads(data)
        return obj.data if isinstance(obj, _RawBytes) else obj

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        data = self.recv()
        return data if isinstance(data, bytes) else _dumps(data)

    def poll(self, timeout: float | None = 0.0) -> bool:
        self._check(False)
        wait = FOREVER if timeout is None else max(timeout, 0.0)
        _, ready = _get(self._hub.recv.remote(self._name, who(), self._end, wait))
        return bool(ready)

    def fileno(self) -> int:
        raise OSError("a pipe end on Ray has no file descriptor (multiprocessing.connection.wait)")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                _get(self._hub.close_end.remote(self._name, self._end))

    def __enter__(self) -> PipeEnd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _RawBytes:
    """What send_bytes() sent, told apart from a sent bytes object by recv()."""

    def __init__(self, data: bytes) -> None:
        self.data = data


class Lock(_OnHub):
    """Lock, RLock, Semaphore and BoundedSemaphore."""

    def __init__(self, hub: str, name: str, kind: str = "lock") -> None:
        super().__init__(hub, name)
        self._kind = kind

    def __repr__(self) -> str:
        return f"<topo ray {self._kind} {self._name!r}>"

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        return bool(_get(self._hub.acquire.remote(self._name, who(), block, timeout)))

    def release(self) -> None:
        problem = _get(self._hub.release.remote(self._name, who()))
        if problem != OK:
            if self._kind == "rlock":
                raise AssertionError("attempt to release recursive lock not owned by thread")
            raise ValueError(problem)

    def get_value(self) -> int:
        return int(_get(self._hub.lock_value.remote(self._name)))

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class Condition(_OnHub):
    def __init__(self, hub: str, name: str, lock: Lock) -> None:
        super().__init__(hub, name)
        self._lock = lock

    def __repr__(self) -> str:
        return f"<topo ray condition {self._name!r}>"

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        return self._lock.acquire(block, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        answer = _get(self._hub.cond_wait.remote(self._name, who(), timeout))
        if isinstance(answer, str):
            raise AssertionError(answer)  # multiprocessing's Condition asserts it
        return bool(answer)

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            self.wait(left)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        problem = _get(self._hub.notify.remote(self._name, who(), n))
        if problem != OK:
            raise AssertionError(problem)

    def notify_all(self) -> None:
        problem = _get(self._hub.notify.remote(self._name, who(), None))
        if problem != OK:
            raise AssertionError(problem)


class Event(_OnHub):
    def __repr__(self) -> str:
        return f"<topo ray event {self._name!r}>"

    def set(self) -> None:
        _get(self._hub.event_set.remote(self._name))

    def clear(self) -> None:
        _get(self._hub.event_clear.remote(self._name))

    def is_set(self) -> bool:
        return bool(_get(self._hub.event_is_set.remote(self._name)))

    def wait(self, timeout: float | None = None) -> bool:
        return bool(_get(self._hub.event_wait.remote(self._name, who(), timeout)))


class Barrier(_OnHub):
    def __repr__(self) -> str:
        return f"<topo ray barrier {self._name!r}>"

    def wait(self, timeout: float | None = None) -> int:
        status, index = _get(self._hub.barrier_wait.remote(self._name, who(), timeout))
        if status == BROKEN:
            raise threading.BrokenBarrierError
        return int(index)

    def abort(self) -> None:
        _get(self._hub.barrier_abort.remote(self._name))

    def reset(self) -> None:
        _get(self._hub.barrier_reset.remote(self._name))

    @property
    def parties(self) -> int:
        return int(_get(self._hub.barrier_info.remote(self._name))[0])

    @property
    def n_waiting(self) -> int:
        return int(_get(self._hub.barrier_info.remote(self._name))[1])

    @property
    def broken(self) -> bool:
        return bool(_get(self._hub.barrier_info.remote(self._name))[2])


class Value(_OnHub):
    """``multiprocessing.Value``: ``.value``, ``get_lock()``, and ``apply(fn)`` (an
    update in one call: ``v.apply(lambda x: x + 1)``)."""

    def __repr__(self) -> str:
        return f"<topo ray value {self._name!r}>"

    @property
    def value(self) -> Any:
        return _get(self._hub.read.remote(self._name))

    @value.setter
    def value(self, new: Any) -> None:
        _get(self._hub.write.remote(self._name, new))

    def get_lock(self) -> Lock:
        return Lock(self._hub_name, f"{self._name}:lock", "rlock")

    def get_obj(self) -> Value:
        return self

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        return self.get_lock().acquire(block, timeout)

    def release(self) -> None:
        self.get_lock().release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def apply(self, fn: Callable[[Any], Any]) -> Any:
        return _get(self._hub.apply.remote(self._name, fn))


class Array(Value):
    """``multiprocessing.Array``: indexing and slices, ``len``, ``get_lock()``."""

    def __repr__(self) -> str:
        return f"<topo ray array {self._name!r}>"

    def __getitem__(self, key: Any) -> Any:
        return _get(self._hub.read.remote(self._name, key))

    def __setitem__(self, key: Any, value: Any) -> None:
        _get(self._hub.write.remote(self._name, value, key))

    def __len__(self) -> int:
        return len(self[:])

    def __iter__(self) -> Iterator[Any]:
        return iter(self[:])


class _Calls(_OnHub):
    """Forwards method calls to a copy held by an actor, as a manager's proxy does."""

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _get(self._hub.call.remote(self._name, method, args, kwargs))

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_") or "_name" not in self.__dict__:  # pickle probing
            raise AttributeError(method)
        return lambda *args, **kwargs: self._call(method, *args, **kwargs)


class _Container(_Calls):
    """A dict or list on the hub: item access, length, membership, iteration."""

    def __getitem__(self, key: Any) -> Any:
        return self._call("__getitem__", key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._call("__setitem__", key, value)

    def __delitem__(self, key: Any) -> None:
        self._call("__delitem__", key)

    def __len__(self) -> int:
        return int(self._call("__len__"))

    def __contains__(self, item: Any) -> bool:
        return bool(self._call("__contains__", item))

    def __iter__(self) -> Iterator[Any]:
        return iter(self._call("copy"))

    def __repr__(self) -> str:
        return repr(self._call("copy"))


class Dict(_Container):
    def keys(self) -> list[Any]:
        return list(self._call("copy").keys())

    def values(self) -> list[Any]:
        return list(self._call("copy").values())

    def items(self) -> list[tuple[Any, Any]]:
        return list(self._call("copy").items())


class List(_Container):
    pass


class Namespace(_OnHub):
    def __init__(self, hub: str, name: str) -> None:
        object.__setattr__(self, "_hub_name", hub)
        object.__setattr__(self, "_name", name)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_") or "_name" not in self.__dict__:
            raise AttributeError(attr)
        return _get(self._hub.call.remote(self._name, "__getattr__", (attr,), {}))

    def __setattr__(self, attr: str, value: Any) -> None:
        _get(self._hub.call.remote(self._name, "__setattr__", (attr, value), {}))

    def __delattr__(self, attr: str) -> None:
        _get(self._hub.call.remote(self._name, "__delattr__", (attr,), {}))


class ObjectProxy:
    """A ``kind: object`` channel: the object lives in an actor of its own, and every
    method call goes there (a BaseManager's AutoProxy does the same)."""

    def __init__(self, actor: str, name: str, methods: list[str] | None) -> None:
        self._actor, self._name, self._methods = actor, name, methods

    def __repr__(self) -> str:
        return f"<topo ray object {self._name!r}>"

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_") or "_methods" not in self.__dict__:  # pickle probing
            raise AttributeError(method)
        if self._methods is not None and method not in self._methods:
            raise AttributeError(f"{self._name!r} exposes no method {method!r}")
        return lambda *args, **kwargs: ray.get(
            handle(self._actor).call.remote(method, args, kwargs)
        )
