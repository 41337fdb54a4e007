"""The deadlock detector's board, wrappers and wait-for reasoning, in one process."""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Iterator

import pytest

from topo import watch
from topo.watch import (
    EXITING,
    Board,
    Snapshot,
    Waiter,
    WatchedConnection,
    WatchedLock,
    WatchedQueue,
    WatchedUnboundedQueue,
    describe,
    find_deadlock,
)

mp = multiprocessing.get_context("spawn")


@pytest.fixture
def board() -> Iterator[Board]:
    """A board of 2 instances and 3 primitives, this process attached as slot 0."""
    b = Board(2, 3)
    watch.attach(b, 0)
    yield b
    watch._cells = None  # detach: other tests see plain delegation


def test_codes_round_trip() -> None:
    for op in watch.OPS:
        for prim in (EXITING, 0, 5, 1000):
            assert watch._decode(watch._code(watch.OPS.index(op), prim)) == (op, prim)


def test_a_completed_call_leaves_the_instance_running_and_counts(board: Board) -> None:
    q = WatchedQueue(mp.Queue(), 2)
    q.put("x")
    assert q.get() == "x"
    snap = board.snapshot()
    assert snap.blocked(0) is None
    assert snap.operations(0) == 2
    assert snap.progress == 2


def test_calls_with_a_timeout_are_not_counted_as_blocking(board: Board) -> None:
    q = WatchedQueue(mp.Queue(), 2)
    q.put("x", timeout=1)
    assert q.get(timeout=1) == "x"
    assert board.snapshot().progress == 0


def test_unbounded_put_is_not_instrumented(board: Board) -> None:
    q = WatchedUnboundedQueue(mp.Queue(), 1)
    q.put(1)
    assert board.snapshot().progress == 0
    assert q.get() == 1


def test_blocked_state_is_visible_while_waiting(board: Board) -> None:
    seen = []
    q = mp.Queue()

    class Spy:
        def get(self) -> object:
            seen.append(board.snapshot().blocked(0))
            return q.get()

    q.put("done")
    assert WatchedQueue(Spy(), 1).get() == "done"
    assert seen == [("get", 1)]
    assert board.snapshot().blocked(0) is None


def test_lock_owner_is_recorded_and_cleared(board: Board) -> None:
    lock = WatchedLock(mp.RLock(), 1)
    with lock, lock:  # an rlock taken twice: owned until the last release
        assert board.owned_by(0) == [1]
    assert board.owned_by(0) == []
    board.reset(0)
    assert board.snapshot().owners == [-1, -1, -1]


def test_wrappers_delegate_and_pickle() -> None:
    a, b = mp.Pipe()
    end = WatchedConnection(a, 0)
    end.send("hi")
    assert b.recv() == "hi"
    assert end.poll() is False
    assert end.unwrapped is a
    assert "watched" in repr(end)
    q = WatchedQueue(mp.Queue(), 4)
    assert q.qsize() == 0  # an attribute the wrapper does not define
    lock = WatchedLock(mp.Lock(), 2)
    copy = pickle.loads(pickle.dumps(WatchedLock(object(), 2)))
    assert isinstance(copy, WatchedLock) and copy._prim == 2
    assert lock.acquire(False) is True
    lock.release()


def _snapshot(*rows: tuple[str, int] | None, owners: list[int] | None = None) -> Snapshot:
    cells = [[watch._code(watch.OPS.index(r[0]), r[1]) if r else 0.0, 0.0] for r in rows]
    return Snapshot(cells, owners or [-1, -1, -1])


NAMES = ["q", "x", "y"]


def test_two_readers_of_each_other_are_a_deadlock() -> None:
    waiters = [Waiter("a", 0, True, False), Waiter("b", 1, True, False)]
    snap = _snapshot(("recv", 0), ("recv", 0))
    lines = find_deadlock(waiters, snap, lambda p, op, w: ["b" if w == "a" else "a"], NAMES)
    assert lines == [
        "a waits in recv() on 'q'; its only peer is 'b' (blocked in recv() on 'q')",
        "b waits in recv() on 'q'; its only peer is 'a' (blocked in recv() on 'q')",
    ]


def test_a_running_peer_means_no_deadlock() -> None:
    waiters = [Waiter("reader", 0, True, False), Waiter("writer", 1, True, False)]
    snap = _snapshot(("get", 0), None)
    assert find_deadlock(waiters, snap, lambda p, op, w: ["writer"], NAMES) is None


def test_a_running_daemon_that_can_help_means_no_deadlock() -> None:
    waiters = [Waiter("reader", 0, True, False), Waiter("feeder", 1, True, True)]
    snap = _snapshot(("get", 0), None)
    assert find_deadlock(waiters, snap, lambda p, op, w: ["feeder"], NAMES) is None


def test_gone_writer_and_held_locks_are_explained() -> None:
    waiters = [
        Waiter("reader", 0, True, False),
        Waiter("feeder", 1, False, False, "exited with code 0"),
    ]
    snap = _snapshot(("get", 0), None)
    assert find_deadlock(waiters, snap, lambda p, op, w: ["feeder"], NAMES) == [
        "reader waits in get() on 'q'; its only peer 'feeder' exited with code 0"
    ]
    waiters = [Waiter("p", 0, True, False), Waiter("q", 1, True, False)]
    snap = _snapshot(("acquire", 2), ("acquire", 1), owners=[-1, 0, 1])
    assert find_deadlock(waiters, snap, lambda p, op, w: ["q" if w == "p" else "p"], NAMES) == [
        "p waits in acquire() on 'y', held by 'q' (blocked in acquire() on 'x')",
        "q waits in acquire() on 'x', held by 'p' (blocked in acquire() on 'y')",
    ]


def test_an_exiting_instance_without_queues_is_not_provably_stuck() -> None:
    waiters = [Waiter("w", 0, True, False)]
    snap = _snapshot((("exit"), EXITING), None)
    assert find_deadlock(waiters, snap, lambda p, op, w: None, NAMES) is None
    assert describe(("exit", EXITING), NAMES) == "exiting, flushing its queues"
    assert describe(("put", 1), NAMES) == "blocked in put() on 'x'"
