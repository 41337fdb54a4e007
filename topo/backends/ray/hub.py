"""The hub: every channel and lock of one run on Ray, held by one asyncio actor.

One actor for all of them keeps a Condition and its lock together, lets a value's
``get_lock()`` be an ordinary lock, and sees every waiter and every owner at once: the
wait-for graph of the deadlock detector, and a drain at the end that cannot block on a
lock a stopped instance held. Its methods run one at a time on the actor's event loop,
so each is atomic up to its first ``await``.

Messages are kept as the bytes their sender pickled: the hub never needs the targets'
modules, and what is left at the end is saved as it is. Blocking calls return a status
(``EMPTY``, ``FULL``...) that the proxies turn into the exception multiprocessing raises.

This module imports no Ray: the launcher wraps ``Hub`` with ``ray.remote``, and the
tests drive it with plain asyncio.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")

OK, EMPTY, FULL, EOF, BROKEN, TIMEOUT, ERROR = (
    "ok",
    "empty",
    "full",
    "eof",
    "broken",
    "timeout",
    "error",
)

# The most items one get_many() takes: a reader alone on its queue fetches what is
# there in one call instead of one call per item.
BATCH = 256


class _Queue:
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize if maxsize > 0 else 0
        # Pickled items, or [ObjectRef] for a big one left in Ray's object store.
        self.items: collections.deque[Any] = collections.deque()
        self.changed = asyncio.Condition()
        self.unfinished = 0  # joinable queues: put and not yet task_done()
        # Room promised to writers of a bounded queue and not yet filled (see reserve).
        self.reserved: collections.Counter[str] = collections.Counter()

    def room(self) -> int:
        return self.maxsize - len(self.items) - sum(self.reserved.values())

    def full(self) -> bool:
        return self.maxsize > 0 and self.room() <= 0


class _Pipe:
    def __init__(self, duplex: bool) -> None:
        self.duplex = duplex
        # inbox[e]: what end e receives; one-way pipes send from end 1 to end 0
        self.inbox: tuple[collections.deque[bytes], collections.deque[bytes]] = (
            collections.deque(),
            collections.deque(),
        )
        self.closed = [False, False]
        self.changed = asyncio.Condition()


class _Lock:
    """lock, rlock, semaphore, bounded_semaphore: a counter and its owners."""

    def __init__(self, kind: str, value: int = 1) -> None:
        self.kind = kind
        self.value = value  # free units
        self.initial = value
        self.owners: list[str] = []  # "instance/thread", once per unit held (rlock: count)
        self.changed = asyncio.Condition()

    def can_take(self, who: str) -> bool:
        if self.kind == "rlock" and self.owners and self.owners[0] == who:
            return True
        return self.value > 0

    def take(self, who: str) -> None:
        if self.kind == "rlock" and self.owners and self.owners[0] == who:
            self.owners.append(who)
            return
        self.value -= 1
        self.owners.append(who)


class _Barrier:
    def __init__(self, parties: int, timeout: float | None) -> None:
        self.parties = parties
        self.timeout = timeout
        self.count = 0
        self.generation = 0
        self.broken = False
        self.reset = set[int]()  # generations a reset() ended while parties waited
        self.changed = asyncio.Condition()


def instance_of(who: str) -> str:
    """``worker[0]/1402`` (instance/thread) -> ``worker[0]``."""
    return who.rpartition("/")[0] or who


class Hub:
    """Holds the run's channels and locks; ``declared`` maps each name to its kind and
    options (plain data: see topo/backends/ray/launcher.py)."""

    def __init__(self, declared: dict[str, dict[str, Any]]) -> None:
        self.kinds: dict[str, str] = {}
        self.queues: dict[str, _Queue] = {}
        self.pipes: dict[str, _Pipe] = {}
        self.locks: dict[str, _Lock] = {}
        self.conditions: dict[str, str] = {}  # condition -> the lock it uses
        self.events: dict[str, asyncio.Event] = {}
        self.barriers: dict[str, _Barrier] = {}
        self.state: dict[str, Any] = {}  # value, array, dict, list, namespace contents
        self.waiting: dict[str, tuple[str, str]] = {}  # who -> (operation, name)
        self.tasks: dict[str, set[asyncio.Task[Any]]] = collections.defaultdict(set)
        self.lines: list[tuple[str, str]] = []  # (instance, line) printed, not yet taken
        self.seen: dict[str, dict[str, Any]] = {}  # instance -> pid, node...
        self.operations = 0  # grows with every completed operation: progress
        # Conditions last: each uses a lock built before it.
        for name, opts in sorted(declared.items(), key=lambda kv: kv[1]["kind"] == "condition"):
            self._build(name, opts)

    def _build(self, name: str, opts: dict[str, Any]) -> None:
        kind = opts["kind"]
        self.kinds[name] = kind
        if kind in ("queue", "joinable_queue", "simple_queue"):
            self.queues[name] = _Queue(opts.get("maxsize", 0))
        elif kind == "pipe":
            self.pipes[name] = _Pipe(opts.get("duplex", True))
        elif kind in ("lock", "rlock", "semaphore", "bounded_semaphore"):
            self.locks[name] = _Lock(kind, opts.get("value", 1))
        elif kind == "condition":
            lock = opts.get("lock") or f"{name}:lock"
            if lock not in self.locks:
                self.locks[lock] = _Lock("rlock")
            self.conditions[name] = lock
            self.barriers[name] = _Barrier(0, None)  # its notify generation
        elif kind == "event":
            self.events[name] = asyncio.Event()
        elif kind == "barrier":
            self.barriers[name] = _Barrier(opts["parties"], opts.get("timeout"))
        elif kind in ("value", "array"):
            self.state[name] = opts["init"]
            self.locks[f"{name}:lock"] = _Lock("rlock")
        elif kind in ("dict", "list", "namespace"):
            self.state[name] = copy.deepcopy(opts.get("init"))
        else:
            raise ValueError(f"the hub cannot hold a {kind}")

    # ----- waiting, and forgetting an instance that stopped ----------------------------

    async def _wait(self, who: str, op: str, name: str, aw: Awaitable[T]) -> T:
        """Await ``aw`` as ``who`` blocked in ``op`` on ``name``: seen by waits(), and
        cancelled by forget(who)."""
        task = asyncio.current_task()
        assert task is not None
        owner = instance_of(who)
        self.tasks[owner].add(task)
        self.waiting[owner] = (op, name)
        try:
            return await aw
        finally:
            self.waiting.pop(owner, None)
            self.tasks[owner].discard(task)

    async def _until(
        self, who: str, op: str, name: str, cond: asyncio.Condition, ready: Any, timeout: Any
    ) -> bool:
        """Wait on ``cond`` (held) until ``ready()``; False when ``timeout`` passed."""
        if ready():
            return True
        if timeout is not None and timeout <= 0:
            return False
        try:
            # asyncio.timeout, not asyncio.wait_for: on 3.11 wait_for swallows a
            # cancel (forget) that comes once the wait is over but before it returns.
            async with asyncio.timeout(timeout):
                await self._wait(who, op, name, cond.wait_for(ready))
        except TimeoutError:
            return bool(ready())
        return True

    async def forget(self, instance: str) -> None:
        """``instance`` stopped: cancel its pending calls (a get it was blocked in must
        not take an item after it died) and close its pipe ends."""
        for task in list(self.tasks.pop(instance, ())):
            task.cancel()
        self.waiting.pop(instance, None)
        for q in self.queues.values():
            if q.reserved.pop(instance, 0):
                async with q.changed:
                    q.changed.notify_all()

    def waits(self) -> dict[str, tuple[str, str]]:
        return dict(self.waiting)

    def holders(self) -> dict[str, str]:
        """Lock -> the instance holding it (the first owner of a semaphore)."""
        return {
            name: instance_of(lock.owners[0])
            for name, lock in self.locks.items()
            if lock.owners and not name.endswith(":lock")
        }

    def progress(self) -> int:
        return self.operations

    # ----- queues ----------------------------------------------------------------------

    async def put(self, name: str, who: str, item: bytes, block: bool, timeout: Any) -> str:
        q = self.queues[name]
        async with q.changed:
            room = await self._until(
                who, "put", name, q.changed, lambda: not q.full(), timeout if block else 0
            )
            if not room:
                return FULL
            q.items.append(item)
            q.unfinished += 1
            self.operations += 1
            q.changed.notify_all()
        return OK

    async def reserve(self, name: str, who: str, want: int, block: bool, timeout: Any) -> int:
        """Room for up to ``want`` items of a bounded queue, promised to ``who``'s
        instance, which then sends them with put_many without waiting for each: waits
        as a put() would while there is none; 0 when the time is up (queue.Full)."""
        q = self.queues[name]
        async with q.changed:
            there = await self._until(
                who, "put", name, q.changed, lambda: q.room() > 0, timeout if block else 0
            )
            if not there:
                return 0
            granted = min(want, q.room())
            q.reserved[instance_of(who)] += granted
            return granted

    async def unreserve(self, name: str, instance: str, count: int) -> None:
        """Promised room a writer did not use, given back."""
        q = self.queues[name]
        async with q.changed:
            q.reserved[instance] = max(0, q.reserved[instance] - count)
            q.changed.notify_all()

    async def put_many(self, name: str, items: list[Any], instance: str | None = None) -> str:
        """A writer's items, in order, never waiting: an unbounded queue's, or a bounded
        one's sent in room ``instance`` reserved."""
        q = self.queues[name]
        async with q.changed:
            if instance is not None:
                q.reserved[instance] = max(0, q.reserved[instance] - len(items))
            q.items.extend(items)
            q.unfinished += len(items)
            self.operations += len(items)
            q.changed.notify_all()
        return OK

    async def adopt(self, name: str, refs: list[Any]) -> None:
        """A writer is ending: the big items it left in Ray's object store (which
        would go with it) are copied into objects this actor owns."""
        import ray

        q = self.queues[name]
        mine = {ref.hex() for ref in refs}
        for i, item in enumerate(list(q.items)):
            if isinstance(item, list) and item and item[0].hex() in mine:
                value = await item[0]
                with contextlib.suppress(IndexError):
                    if q.items[i] is item:
                        q.items[i] = [ray.put(value)]

    async def get(self, name: str, who: str, block: bool, timeout: Any) -> tuple[str, Any]:
        status, items = await self.get_many(name, who, block, timeout, 1)
        return status, items[0] if items else None

    async def get_many(
        self, name: str, who: str, block: bool, timeout: Any, most: int = BATCH, readers: int = 1
    ) -> tuple[str, list[Any]]:
        """At least one item (waiting for it as a get() would), at most ``most``, and
        at most a fair share of what is waiting when ``readers`` read the queue."""
        q = self.queues[name]
        async with q.changed:
            there = await self._until(
                who, "get", name, q.changed, lambda: bool(q.items), timeout if block else 0
            )
            if not there:
                return EMPTY, []
            share = max(1, len(q.items) // max(readers, 1))
            taken = [q.items.popleft() for _ in range(min(most, share))]
            self.operations += len(taken)
            q.changed.notify_all()
        return OK, taken

    async def give_back(self, name: str, items: list[bytes]) -> None:
        """Items a stopped reader had taken and not used: first in line again."""
        q = self.queues[name]
        async with q.changed:
            q.items.extendleft(reversed(items))
            q.changed.notify_all()

    def depths(self) -> dict[str, int]:
        return {name: len(q.items) for name, q in self.queues.items()}

    def qsize(self, name: str) -> int:
        return len(self.queues[name].items)

    def full(self, name: str) -> bool:
        return self.queues[name].full()

    async def task_done(self, name: str) -> str:
        q = self.queues[name]
        async with q.changed:
            if q.unfinished <= 0:
                return ERROR
            q.unfinished -= 1
            self.operations += 1
            q.changed.notify_all()
        return OK

    async def join(self, name: str, who: str) -> str:
        q = self.queues[name]
        async with q.changed:
            await self._until(who, "join", name, q.changed, lambda: q.unfinished == 0, None)
        return OK

    # ----- pipes -----------------------------------------------------------------------

    @staticmethod
    def _other(p: _Pipe, end: int) -> int:
        return 1 - end

    async def send(self, name: str, end: int, item: bytes) -> str:
        p = self.pipes[name]
        async with p.changed:
            if p.closed[self._other(p, end)]:
                return BROKEN
            p.inbox[self._other(p, end)].append(item)
            self.operations += 1
            p.changed.notify_all()
        return OK

    async def recv(self, name: str, who: str, end: int, timeout: Any = None) -> tuple[str, Any]:
        """The next item for ``end``; with a timeout, only whether one is there (poll)."""
        p = self.pipes[name]
        other = self._other(p, end)
        op = "recv" if timeout is None else "poll"
        async with p.changed:
            ready = await self._until(
                who, op, name, p.changed, lambda: bool(p.inbox[end]) or p.closed[other], timeout
            )
            if timeout is not None:  # poll: True when recv() would not block (EOF too)
                return OK, ready
            if not p.inbox[end]:
                return EOF, None
            self.operations += 1
            return OK, p.inbox[end].popleft()

    async def close_end(self, name: str, end: int) -> None:
        p = self.pipes[name]
        async with p.changed:
            p.closed[end] = True
            p.changed.notify_all()

    async def open_end(self, name: str, end: int) -> None:
        """A restarted instance has its end again."""
        p = self.pipes[name]
        async with p.changed:
            p.closed[end] = False

    # ----- locks, semaphores, conditions, events, barriers -----------------------------

    async def acquire(self, name: str, who: str, block: bool, timeout: Any) -> bool:
        lock = self.locks[name]
        async with lock.changed:
            got = await self._until(
                who,
                "acquire",
                name,
                lock.changed,
                lambda: lock.can_take(who),
                (timeout if timeout is None or timeout >= 0 else None) if block else 0,
            )
            if got:
                lock.take(who)
                self.operations += 1
            return got

    async def release(self, name: str, who: str) -> str:
        lock = self.locks[name]
        async with lock.changed:
            if lock.kind == "rlock":
                if not lock.owners or lock.owners[0] != who:
                    return "cannot release un-acquired lock"
                lock.owners.pop()
                if not lock.owners:
                    lock.value += 1
            elif (lock.kind == "bounded_semaphore" and lock.value >= lock.initial) or (
                lock.kind == "lock" and lock.value >= 1
            ):
                return "semaphore or lock released too many times"
            else:
                lock.value += 1
                if who in lock.owners:
                    lock.owners.remove(who)
                elif lock.owners:
                    lock.owners.pop(0)  # a Lock may be released by another process
            self.operations += 1
            lock.changed.notify_all()
        return OK

    def lock_value(self, name: str) -> int:
        return self.locks[name].value

    def is_owned(self, name: str, who: str) -> bool:
        lock = self.locks[name]
        return bool(lock.owners) and lock.owners[0] == who

    async def cond_wait(self, name: str, who: str, timeout: Any) -> str | bool:
        """Condition.wait: release the lock entirely, wait for a notify, take it back
        with the same count; False when the timeout passed."""
        lock = self.locks[self.conditions[name]]
        gen = self.barriers[name]
        if not lock.owners or lock.owners[0] != who:
            return "cannot wait on un-acquired lock"
        async with lock.changed:
            count = len(lock.owners)
            lock.owners.clear()
            lock.value += 1
            lock.changed.notify_all()
        async with gen.changed:
            start = gen.generation
            gen.count += 1
            try:
                notified = await self._until(
                    who, "wait", name, gen.changed, lambda: gen.generation != start, timeout
                )
            finally:
                gen.count -= 1
        async with lock.changed:
            await self._until(who, "acquire", name, lock.changed, lambda: lock.value > 0, None)
            lock.value -= 1
            lock.owners.extend([who] * count)
        self.operations += 1
        return notified

    async def notify(self, name: str, who: str, n: int | None) -> str:
        lock = self.locks[self.conditions[name]]
        if not lock.owners or lock.owners[0] != who:
            return "cannot notify on un-acquired lock"
        gen = self.barriers[name]
        async with gen.changed:
            # A notify wakes every waiter of this generation when n covers them all;
            # else as many as asked, in arrival order (asyncio.Condition.notify).
            if n is None or n >= gen.count:
                gen.generation += 1
                gen.changed.notify_all()
            else:
                gen.generation += 1
                gen.changed.notify(n)
        return OK

    async def event_set(self, name: str) -> None:
        self.events[name].set()
        self.operations += 1

    def event_clear(self, name: str) -> None:
        self.events[name].clear()

    def event_is_set(self, name: str) -> bool:
        return self.events[name].is_set()

    async def event_wait(self, name: str, who: str, timeout: Any) -> bool:
        event = self.events[name]
        if event.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            await self._wait(who, "wait", name, asyncio.wait_for(event.wait(), timeout))
        return event.is_set()

    async def barrier_wait(self, name: str, who: str, timeout: Any) -> tuple[str, int]:
        b = self.barriers[name]
        timeout = b.timeout if timeout is None else timeout
        async with b.changed:
            if b.broken:
                return BROKEN, -1
            index = b.count
            b.count += 1
            generation = b.generation
            if b.count == b.parties:
                b.count = 0
                b.generation += 1
                self.operations += 1
                b.changed.notify_all()
                return OK, index
            passed = await self._until(
                who,
                "wait",
                name,
                b.changed,
                lambda: b.generation != generation or b.broken,
                timeout,
            )
            if b.generation != generation:
                return (BROKEN, -1) if generation in b.reset else (OK, index)
            if not passed:  # a timeout breaks the barrier for everyone (threading's rule)
                b.broken = True
                b.changed.notify_all()
            return BROKEN, -1

    async def barrier_abort(self, name: str) -> None:
        b = self.barriers[name]
        async with b.changed:
            b.broken = True
            b.changed.notify_all()

    async def barrier_reset(self, name: str) -> None:
        b = self.barriers[name]
        async with b.changed:
            if b.count:  # those waiting get BrokenBarrierError (threading's rule)
                b.reset.add(b.generation)
                b.changed.notify_all()
            b.broken, b.count = False, 0
            b.generation += 1

    def barrier_info(self, name: str) -> tuple[int, int, bool]:
        b = self.barriers[name]
        return b.parties, b.count, b.broken

    # ----- state: value, array, dict, list, namespace ----------------------------------

    def read(self, name: str, key: Any = None) -> Any:
        value = self.state[name]
        return value if key is None else value[key]

    def write(self, name: str, value: Any, key: Any = None) -> None:
        if key is None:
            self.state[name] = value
        else:
            target = self.state[name]
            if (  # an array has a fixed length
                self.kinds[name] == "array"
                and isinstance(key, slice)
                and len(range(*key.indices(len(target)))) != len(value)
            ):
                raise ValueError("Can only assign sequence of same size")
            target[key] = value
        self.operations += 1

    def call(self, name: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A method of a dict, list or namespace, on the hub's copy; what it returns
        comes back as a copy, as from a manager's proxy."""
        target = self.state[name]
        self.operations += 1
        if self.kinds[name] == "namespace":
            if method == "__getattr__":
                try:
                    return target[args[0]]
                except KeyError:
                    raise AttributeError(args[0]) from None
            if method == "__setattr__":
                target[args[0]] = args[1]
                return None
            if method == "__delattr__":
                del target[args[0]]
                return None
        return getattr(target, method)(*args, **kwargs)

    def apply(self, name: str, fn: Any) -> Any:
        """``fn(value)`` becomes the new value, in one step (an atomic update)."""
        self.state[name] = fn(self.state[name])
        self.operations += 1
        return self.state[name]

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.state)

    # ----- output, and what the instances tell about themselves ------------------------

    def print_lines(self, instance: str, lines: list[str]) -> None:
        self.lines.extend((instance, line) for line in lines)

    def take_lines(self) -> list[tuple[str, str]]:
        lines, self.lines = self.lines, []
        return lines

    def hello(self, instance: str, facts: dict[str, Any]) -> None:
        self.seen[instance] = facts

    def facts(self) -> dict[str, dict[str, Any]]:
        return dict(self.seen)

    # ----- the end ---------------------------------------------------------------------

    def drain(self, most: int) -> dict[str, list[bytes]]:
        """Everything still in queues and pipes, by channel (at most ``most`` each)."""
        left: dict[str, list[bytes]] = {}
        for name, q in self.queues.items():
            if q.items:
                left[name] = [q.items.popleft() for _ in range(min(most, len(q.items)))]
        for name, p in self.pipes.items():
            items = [*p.inbox[0], *p.inbox[1]][:most]
            if items:
                left[name] = items
        return left
