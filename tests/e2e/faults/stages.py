"""Three stages with a known bottleneck, for the bottleneck verdict's tests: each item
costs ``delay`` seconds in the stage that is slow, nothing in the others."""

from __future__ import annotations

import time
from typing import Any


def produce(out: Any, n: int, delay: float, workers: int) -> int:
    for number in range(n):
        time.sleep(delay)
        out.put(number)
    for _ in range(workers):
        out.put(None)
    return n


def work(inbox: Any, outbox: Any, delay: float) -> int:
    done = 0
    while (number := inbox.get()) is not None:
        time.sleep(delay)
        outbox.put(number)
        done += 1
    outbox.put(None)
    return done


def collect(inbox: Any, delay: float, workers: int) -> int:
    seen = finished = 0
    while finished < workers:
        if inbox.get() is None:
            finished += 1
            continue
        time.sleep(delay)
        seen += 1
    return seen
