"""producer -> N squarers -> collector, stopped by sentinels (``specs/pipeline.yaml``).

Shutdown works by passing ``None`` along: the producer puts one ``None`` per worker
after the last number, each worker forwards the ``None`` it receives and stops, and the
collector stops once it has seen one ``None`` per worker.
"""

from __future__ import annotations

from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized

from topo.context import RunContext


def produce(out: Queue, n: int, workers: int) -> int:
    """Put the numbers 0..n-1 into ``out``, then one sentinel per worker."""
    for number in range(n):
        out.put(number)  # blocks while the queue is full (maxsize), which paces the producer
    for _ in range(workers):
        out.put(None)
    print(f"produced {n} numbers for {workers} workers")
    return n


def square(inbox: Queue, outbox: Queue, total: Synchronized, worker_id: int) -> int:
    """Square numbers from ``inbox`` into ``outbox`` until a sentinel, adding them to ``total``."""
    count = 0
    while (number := inbox.get()) is not None:
        squared = number * number
        outbox.put(squared)
        with total.get_lock():  # `+=` on a shared value is a read then a write: hold its lock
            total.value += squared
        count += 1
    outbox.put(None)  # tell the collector this worker is done
    print(f"worker {worker_id} squared {count} numbers")
    return count


def collect(inbox: Queue, ctx: RunContext) -> dict[str, int]:
    """Sum what the workers send until every worker has sent its sentinel."""
    workers = ctx.params["workers"]
    count = total = finished = 0
    while finished < workers:
        squared = inbox.get()
        if squared is None:
            finished += 1
            continue
        count += 1
        total += squared
    print(f"{ctx.name}: {count} results from {workers} workers, sum {total}")
    return {"count": count, "sum": total}
