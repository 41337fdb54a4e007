"""Shared state: shared-memory values and arrays, and manager-backed containers.

A ``value`` or ``array`` lives in shared memory: fast, but only numbers and characters,
and ``+=`` is not atomic, so writers hold ``get_lock()`` (there unless the spec says
``lock: false``). A ``dict``, ``list`` or ``namespace`` lives in the run's manager
process; each access is a round trip to it, and any picklable value fits.
"""

from __future__ import annotations

from collections.abc import MutableSequence
from ctypes import c_double
from multiprocessing.managers import DictProxy, ListProxy, Namespace, ValueProxy
from multiprocessing.sharedctypes import Synchronized, SynchronizedArray
from typing import Any

from topo.context import RunContext

# ----- shared_value -----------------------------------------------------------------------


def add_up(total: Synchronized, hits: Synchronized, amount: float, times: int) -> int:
    """Add ``amount`` to ``total`` and 1 to ``hits``, ``times`` times, each under its lock."""
    for _ in range(times):
        with total.get_lock():
            total.value += amount
        with hits.get_lock():
            hits.value += 1
    return times


def average(total: Synchronized, hits: Synchronized, mean: c_double) -> float:
    """Store ``total / hits`` into ``mean`` (a value without a lock: this is its only writer)."""
    mean.value = total.value / hits.value
    print(f"{hits.value} additions, total {total.value}, mean {mean.value}")
    return float(mean.value)


# ----- shared_array -----------------------------------------------------------------------


def fill_squares(squares: SynchronizedArray, ctx: RunContext) -> list[int]:
    """Fill every ``ctx.replicas``-th slot, starting at ``ctx.replica``, with its index squared.

    Replicas write disjoint slots, so no lock is needed.
    """
    mine = list(range(ctx.replica, len(squares), ctx.replicas))
    for index in mine:
        squares[index] = index * index
    return mine


def scale(weights: SynchronizedArray, factor: float) -> list[float]:
    """Multiply every weight by ``factor`` in place, holding the array's lock throughout."""
    with weights.get_lock():
        for index in range(len(weights)):
            weights[index] *= factor
        return weights[:]


# ----- manager_state ----------------------------------------------------------------------


def record(
    scores: DictProxy,
    log: ListProxy,
    info: Namespace,
    hits: ValueProxy,
    grid: MutableSequence[int],
    ctx: RunContext,
) -> str:
    """Write to each kind of manager-backed state."""
    scores["bob"] = 2
    log.append(f"{ctx.name} was here")
    info.status = "written"  # namespace attributes are set like any object's
    info.writer = ctx.name
    hits.value += 1  # one round trip to read, one to write: fine with a single writer
    for index in range(len(grid)):
        grid[index] = index * 10
    return "recorded"


def snapshot(
    scores: DictProxy, log: ListProxy, info: Namespace, hits: ValueProxy, grid: MutableSequence[int]
) -> dict[str, Any]:
    """Read everything back as plain values: what this process sees of another's writes."""
    return {
        "scores": dict(scores),
        "log": list(log),
        "status": info.status,
        "writer": info.writer,
        "hits": hits.value,
        "grid": list(grid),
    }
