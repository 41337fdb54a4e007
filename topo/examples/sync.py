"""Synchronisation: locks, semaphores, conditions, events and barriers.

Each function takes the primitive under the parameter name its spec binds under ``uses``.
Each pairs it with a bit of shared state, so that what the primitive guarantees shows
up in the run's results or final state.
"""

from __future__ import annotations

import time
from ctypes import c_int
from multiprocessing.managers import ListProxy
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import (
    Barrier,
    BoundedSemaphore,
    Condition,
    Event,
    Lock,
    RLock,
    Semaphore,
)

from topo.context import RunContext

# ----- lock: one speaker at a time ----------------------------------------------------------


def speak(lock: Lock, transcript: ListProxy, lines: int, ctx: RunContext) -> int:
    """Print ``lines`` lines (also appended to ``transcript``) without anyone cutting in."""
    with lock:
        for number in range(1, lines + 1):
            line = f"{ctx.name} line {number}/{lines}"
            print(line, flush=True)
            transcript.append(line)
            time.sleep(0.01)  # others are ready to talk by now, yet they wait for the lock
    return lines


# ----- rlock: a lock the holder may take again ----------------------------------------------


def deposit(lock: RLock, balance: c_int, times: int) -> int:
    """Deposit 1, ``times`` times; each deposit takes ``lock`` twice, once in ``_add``."""
    for _ in range(times):
        with lock:  # e.g. a transaction spanning several updates...
            _add(lock, balance, 1)
    return times


def _add(lock: RLock, balance: c_int, amount: int) -> None:
    with lock:  # ...each of which also locks: fine for an RLock, a deadlock with a Lock
        balance.value += amount


# ----- condition: wait until shared state says go -------------------------------------------


def wait_for_stage(ready: Condition, stage: c_int, wanted: int, ctx: RunContext) -> int:
    """Sleep on ``ready`` until ``stage`` reaches ``wanted``; return the stage seen."""
    with ready:
        # wait_for checks first, so a notification sent before we got here is not missed
        if not ready.wait_for(lambda: stage.value >= wanted, timeout=20):
            raise TimeoutError(f"{ctx.name}: stage never reached {wanted}")
        seen: int = stage.value
    print(f"{ctx.name} woke up at stage {seen}")
    return seen


def advance(mutex: Lock, ready: Condition, stage: c_int, to: int) -> int:
    """Set ``stage`` under ``mutex`` (the condition's own lock), then wake every waiter."""
    time.sleep(0.2)  # give the waiters time to start waiting
    with mutex:  # the same lock the waiters hold while they check stage
        stage.value = to
    with ready:
        ready.notify_all()
    return to


# ----- semaphore: at most `value` holders at once -------------------------------------------


def crowd_in(
    gate: Semaphore, start: Barrier, inside: Synchronized, peak: c_int, hold_s: float
) -> int:
    """Everyone rushes ``gate`` at once; count who is inside and remember the peak."""
    start.wait()  # line everyone up first, so the gate is what keeps them apart
    with gate:
        with inside.get_lock():  # this lock also guards peak (which has none of its own)
            inside.value += 1
            crowd: int = inside.value
            peak.value = max(peak.value, crowd)
        time.sleep(hold_s)
        with inside.get_lock():
            inside.value -= 1
    return crowd


# ----- bounded_semaphore: releasing more than was acquired is an error ---------------------


def use_slot(slots: BoundedSemaphore, times: int) -> int:
    """Take and give back a slot ``times`` times."""
    for _ in range(times):
        with slots:
            time.sleep(0.02)
    return times


def over_release(slots: BoundedSemaphore) -> str:
    """Release a slot nobody holds: a plain semaphore would grow, a bounded one refuses."""
    try:
        slots.release()
    except ValueError as error:
        return f"refused: {error}"
    return "accepted"


# ----- event: one process says go, many wait for it -----------------------------------------


def prepare_and_signal(go: Event, answer: Synchronized, value: int) -> int:
    """Prepare ``answer``, then set ``go``."""
    time.sleep(0.2)  # the waiters are blocked meanwhile
    answer.value = value
    go.set()
    return value


def wait_for_signal(go: Event, answer: Synchronized, ctx: RunContext) -> int:
    """Block until ``go`` is set, then read what was prepared before it."""
    if not go.wait(timeout=20):
        raise TimeoutError(f"{ctx.name}: nobody said go")
    return int(answer.value)


# ----- barrier: nobody passes until everyone has arrived -----------------------------------


def meet(start: Barrier, ctx: RunContext) -> dict[str, int]:
    """Wait at ``start``; ``wait()`` gives each arrival a distinct index 0..parties-1."""
    index = start.wait()
    print(f"{ctx.name} passed the barrier ({index} of {start.parties})")
    return {"index": index, "parties": start.parties}
