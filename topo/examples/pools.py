"""Objects served by a manager: a custom connection pool, and proxies sent to a Pool.

``ConnectionPool`` is an ordinary class. A spec shares one instance through
``kind: object``: the instance lives in a manager process and each user gets a proxy
whose method calls run there, so every process sees the same pool.

Proxies are annotated with the interface they offer: ``pool: ConnectionPool`` for
the pool's proxy, and ``queue.Queue`` and ``threading.Lock`` for what ``via: manager``
builds (as typeshed types ``manager.Queue()`` and ``manager.Lock()``).
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time

from topo.context import RunContext


class ConnectionPool:
    """A fixed set of connections (numbered 0..size-1), lent out one at a time.

    The manager serves each client from its own thread, so the pool guards its state
    with a ``threading.Condition``, and ``acquire`` blocks until a connection is free.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = list(range(size))
        self._changed = threading.Condition()
        self._acquired = 0
        self._peak = 0

    def acquire(self, timeout: float = 20.0) -> int:
        """Take a free connection, waiting up to ``timeout`` seconds for one."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._free, timeout):
                raise TimeoutError(f"no connection free after {timeout} s")
            connection = self._free.pop(0)
            self._acquired += 1
            self._peak = max(self._peak, self.size - len(self._free))
            return connection

    def release(self, connection: int) -> None:
        """Give a connection back."""
        with self._changed:
            if connection in self._free or not 0 <= connection < self.size:
                raise ValueError(f"connection {connection} is not lent out")
            self._free.append(connection)
            self._changed.notify()

    def stats(self) -> dict[str, int]:
        """How big the pool is, how many are lent now, and in total, and at most at once."""
        with self._changed:
            in_use = self.size - len(self._free)
            return {
                "size": self.size,
                "in_use": in_use,
                "acquired": self._acquired,
                "peak": self._peak,
            }


def run_queries(pool: ConnectionPool, queries: int, ctx: RunContext) -> list[int]:
    """Run ``queries`` pretend queries, each on a connection borrowed from ``pool``."""
    used: list[int] = []
    for _ in range(queries):
        connection = pool.acquire()  # a call through the proxy, run in the manager
        try:
            time.sleep(0.02)  # the "query"
            used.append(connection)
        finally:
            pool.release(connection)
    print(f"{ctx.name} used connections {used}")
    return used


def audit(pool: ConnectionPool) -> dict[str, int]:
    """Report the pool's counters once every user has finished."""
    return pool.stats()


# ----- manager_queue_lock: manager proxies can travel to Pool workers ----------------------


def square_in_pool(
    out: queue.Queue[int | None], lock: threading.Lock, numbers: int, pool_size: int
) -> int:
    """Square 0..numbers-1 in a ``multiprocessing.Pool``; its workers put into ``out``.

    ``out`` and ``lock`` are manager proxies (``via: manager``), which can be passed to
    pool workers as arguments; a plain ``multiprocessing.Queue`` or ``Lock`` cannot.
    """
    with multiprocessing.Pool(pool_size) as pool:
        pool.starmap(_square_into, [(out, lock, number) for number in range(numbers)])
    out.put(None)
    return numbers


def _square_into(out: queue.Queue[int | None], lock: threading.Lock, number: int) -> None:
    with lock:
        print(f"pool worker squares {number}", flush=True)
    out.put(number * number)


def sum_squares(inbox: queue.Queue[int | None], lock: threading.Lock) -> dict[str, int]:
    """Sum what arrives in ``inbox`` until the sentinel."""
    count = total = 0
    while (squared := inbox.get()) is not None:
        count += 1
        total += squared
    with lock:
        print(f"{count} squares, sum {total}", flush=True)
    return {"count": count, "sum": total}
