"""Queues and pipes: moving values from one process to another.

A reader cannot tell "nothing yet" from "nothing ever", so every sender here ends
with a sentinel (``None``) and every reader stops when it has seen enough of them.
"""

from __future__ import annotations

import time
from multiprocessing.connection import Connection
from multiprocessing.queues import JoinableQueue, Queue, SimpleQueue

from topo.context import RunContext

# ----- queue_fan_in: two senders, one queue, one reader ---------------------------------


def emit(out: Queue, items: list[str], ctx: RunContext) -> int:
    """Put each item into ``out``, then a sentinel."""
    for item in items:
        out.put(item)
    out.put(None)
    print(f"{ctx.name} sent {len(items)} items")
    return len(items)


def gather(inbox: Queue, senders: int) -> list[str]:
    """Return the items from ``inbox`` in arrival order, once ``senders`` sentinels arrived."""
    items: list[str] = []
    finished = 0
    while finished < senders:
        item = inbox.get()
        if item is None:
            finished += 1
        else:
            items.append(item)
    return items


# ----- simple_queue: no size, no timeouts, just put/get ---------------------------------


def put_words(out: SimpleQueue, words: list[str]) -> int:
    """Put each word, then a sentinel."""
    for word in words:
        out.put(word)
    out.put(None)
    return len(words)


def join_words(inbox: SimpleQueue) -> str:
    """Read words until the sentinel and return them as one sentence."""
    words: list[str] = []
    while (word := inbox.get()) is not None:
        words.append(word)
    return " ".join(words)


# ----- joinable_queue: the sender waits until every job is marked done ------------------


def hand_out(jobs: JoinableQueue, count: int, workers: int) -> int:
    """Queue ``count`` jobs, wait until all are done, then send each worker home."""
    for job in range(count):
        jobs.put(job)
    jobs.join()  # returns once a worker has called task_done() for every job
    print(f"all {count} jobs done")
    for _ in range(workers):
        jobs.put(None)
    jobs.join()  # and once every worker has taken its sentinel
    return count


def do_jobs(jobs: JoinableQueue, ctx: RunContext) -> int:
    """Take jobs until the sentinel, marking each one done; return how many this worker did."""
    done = 0
    while True:
        job = jobs.get()
        try:
            if job is None:
                return done
            time.sleep(0.005)  # the "work"
            done += 1
        finally:
            jobs.task_done()  # for the sentinel too, or the sender's second join() never returns


# ----- pipe_duplex: both ends can send and receive ---------------------------------------


def say_hello(conn: Connection, ctx: RunContext) -> str:
    """Greet the other end first, then return its answer."""
    conn.send(f"hello from {ctx.name}")
    answer: str = conn.recv()
    print(f"{ctx.name} received {answer!r}")
    return answer


def answer_hello(conn: Connection, ctx: RunContext) -> str:
    """Wait for a greeting, greet back, and return the greeting received."""
    greeting: str = conn.recv()
    conn.send(f"hello back from {ctx.name}")
    print(f"{ctx.name} received {greeting!r}")
    return greeting


# ----- pipe_oneway: a simplex pipe, one sending end and one receiving end ---------------


def send_numbers(conn: Connection, count: int) -> int:
    """Send 0..count-1, then a sentinel."""
    for number in range(count):
        conn.send(number)
    conn.send(None)
    conn.close()
    return count


def receive_all(conn: Connection) -> list[int]:
    """Return everything received before the sentinel."""
    received: list[int] = []
    while (number := conn.recv()) is not None:
        received.append(number)
    return received
