"""The local backend's instrumentation: the board, the wrappers and the sampler, in one
process (the detector's reasoning is tested in test_deadlock.py)."""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from topo.backends.local import instrument as watch
from topo.backends.local import procfs
from topo.backends.local.instrument import (
    EXITING_PRIMITIVE,
    Board,
    WatchedLock,
    WatchedRLock,
    WatchedSemaphore,
)

mp = multiprocessing.get_context("spawn")


@pytest.fixture
def board() -> Iterator[Board]:
    """A board of 2 instances and 3 primitives, this process attached as slot 0."""
    b = Board(2, 3)
    watch.attach(b, 0)
    yield b
    watch._sampling = False  # stop a sampler the test started
    watch._cells = None  # detach: other tests see plain delegation
    time.sleep(2 * watch.SAMPLE_INTERVAL_S)


def _mark_slot_1(b: Board) -> None:
    watch.attach(b, 1)
    watch._own(2, True)
    b.array[1 * 2] = 42.0


def test_the_board_is_shared_with_a_spawned_instance() -> None:
    b = Board(2, 3)
    b.array[0] = 7.0
    p = mp.Process(target=_mark_slot_1, args=(b,))  # pickled: spawn
    p.start()
    p.join(30)
    assert p.exitcode == 0
    snap = b.snapshot()
    assert snap.rows == [[7.0, 0.0], [42.0, 0.0]]
    assert snap.owners == [-1, -1, 1]
    assert b.owned_by(1) == [2]
    b.reset(1)
    assert b.snapshot().rows[1] == [0.0, 0.0] and b.owned_by(1) == []


def test_codes_round_trip() -> None:
    for op in watch.OPS:
        for prim in (EXITING_PRIMITIVE, 0, 5, 1000):
            assert watch._decode(watch._code(watch.OPS.index(op), prim)) == (op, prim)


def test_wrapped_calls_that_return_leave_the_instance_running(board: Board) -> None:
    sem = WatchedSemaphore(mp.Semaphore(2), 2)
    assert sem.acquire()
    assert sem.acquire(timeout=1)
    assert sem.acquire(False) is False
    sem.release()
    assert board.snapshot().blocked(0) is None


def _seen_while(board: Board, release: Callable[[], object], delay: float = 0.4) -> list[object]:
    """What the board says of slot 0 ``delay`` seconds from now; then ``release()``."""
    seen: list[object] = []

    def look_then_release() -> None:
        seen.append(board.snapshot().blocked(0))
        release()

    # A thread named as topo's own: a helper of the target's would make the instance
    # not blocked (it could wake the main thread), which is the point of other tests.
    timer = threading.Timer(delay, look_then_release)
    timer.name = "topo-test-release"
    timer.start()
    return seen


def test_the_sampler_sees_a_get_that_waits(board: Board) -> None:
    q = mp.Queue()
    watch.sample({id(q): 1})
    seen = _seen_while(board, lambda: q.put("x"))
    assert q.get() == "x"  # blocks until the timer puts
    assert seen == [("get", 1)]
    time.sleep(3 * watch.SAMPLE_INTERVAL_S)
    assert board.snapshot().blocked(0) is None  # running again


@pytest.mark.parametrize("transport", ["mp", "socket"])
def test_the_sampler_sees_a_put_on_a_full_joinable_queue(board: Board, transport: str) -> None:
    from topo.backends.local.transport import build

    q = mp.JoinableQueue(1) if transport == "mp" else build("joinable_queue", "socket", 1, mp)
    q.put("first")
    watch.sample({id(q): 3})
    seen = _seen_while(board, q.get)  # a get makes room, after the sampler looked
    q.put("second")  # waits for that room
    assert seen == [("put", 3)]


def test_the_sampler_sees_a_get_deep_in_a_recursion(board: Board) -> None:
    q = mp.Queue()
    watch.sample({id(q): 1})

    def down(levels: int) -> object:
        return q.get() if levels == 0 else down(levels - 1)

    seen = _seen_while(board, lambda: q.put("x"))
    assert down(500) == "x"  # only the top of the stack is looked at
    assert seen == [("get", 1)]


def test_the_sampler_sees_a_recv_and_a_poll_that_wait(board: Board) -> None:
    a, b = mp.Pipe()
    watch.sample({id(a): 2})
    in_recv = _seen_while(board, lambda: b.send("x"))
    assert a.recv() == "x"
    in_poll = _seen_while(board, lambda: b.send("y"))
    assert a.poll(None) is True
    assert in_recv + in_poll == [("recv", 2), ("poll", 2)]


def test_the_sampler_sees_a_lock_and_an_event_that_wait(board: Board) -> None:
    lock, event = WatchedLock(mp.Lock(), 0), mp.Event()
    watch.sample({id(lock): 0, id(event): 1})
    lock.unwrapped.acquire()  # taken behind the wrapper's back: acquire() below waits
    in_acquire = _seen_while(board, lock.unwrapped.release)
    with lock:
        pass
    in_wait = _seen_while(board, event.set)
    assert event.wait() is True
    assert in_acquire + in_wait == [("acquire", 0), ("wait", 1)]


def test_the_sampler_ignores_calls_with_a_timeout_and_unbound_objects(board: Board) -> None:
    bound, other = mp.Queue(), mp.Queue()
    watch.sample({id(bound): 1})
    with_timeout = _seen_while(board, lambda: bound.put("x"))
    assert bound.get(timeout=5) == "x"
    unbound = _seen_while(board, lambda: other.put("y"))
    assert other.get() == "y"
    assert with_timeout + unbound == [None, None]


def test_the_sampler_reads_manager_queue_calls() -> None:
    get = watch._proxy_call
    assert get({"methodname": "get", "args": (), "kwds": {}}) == watch._GET
    assert get({"methodname": "get", "args": (True, 1.0), "kwds": {}}) is None
    assert get({"methodname": "get", "args": (), "kwds": {"block": False}}) is None
    assert get({"methodname": "put", "args": ("x",), "kwds": {}}) == watch._PUT
    assert get({"methodname": "put", "args": ("x", True, 2), "kwds": {}}) is None
    assert get({"methodname": "join", "args": (), "kwds": {}}) == watch._JOIN
    assert get({"methodname": "qsize", "args": (), "kwds": {}}) is None


def test_activity_moves_when_the_thread_runs() -> None:
    before = procfs.activity(os.getpid())
    assert before is not None
    end = time.monotonic() + 0.1
    while time.monotonic() < end:  # burn CPU, and sleep a few times
        time.sleep(0.001)
    after = procfs.activity(os.getpid())
    assert after is not None and after > before
    assert procfs.activity(2**22 + 12345) is None  # no such process


def _board_of_this_process(out: Any) -> None:
    out.put((watch._cells is None, watch._sampling))


def test_a_process_forked_by_an_instance_is_not_that_instance(board: Board) -> None:
    watch.sample({id(board): 0})
    fork = multiprocessing.get_context("fork")
    out = fork.SimpleQueue()
    child = fork.Process(target=_board_of_this_process, args=(out,))
    child.start()
    child.join(10)
    assert out.get() == (True, False)  # detached in the child...
    assert watch._cells is not None and watch._sampling  # ...and still attached here


def test_lock_owner_is_recorded_and_cleared(board: Board) -> None:
    lock = WatchedRLock(mp.RLock(), 1)
    with lock, lock:  # an rlock taken twice: owned until the last release
        assert board.owned_by(0) == [1]
    assert board.owned_by(0) == []
    board.reset(0)
    assert board.snapshot().owners == [-1, -1, -1]


def test_wrappers_delegate_and_pickle() -> None:
    sem = WatchedSemaphore(mp.Semaphore(3), 0)
    assert sem.get_value() == 3  # an attribute the wrapper does not define
    assert sem.unwrapped.get_value() == 3
    assert "watched" in repr(sem)
    lock = WatchedLock(mp.Lock(), 2)
    copy = pickle.loads(pickle.dumps(WatchedLock(object(), 2)))
    assert isinstance(copy, WatchedLock) and copy._prim == 2
    assert lock.acquire(False) is True
    lock.release()


def test_a_returned_target_with_a_live_thread_is_not_exiting(board: Board) -> None:
    go = threading.Event()
    helper = threading.Thread(target=go.wait)  # not a daemon: the process waits for it
    helper.start()
    try:
        watch.exiting()
        assert board.snapshot().blocked(0) is None
    finally:
        go.set()
        helper.join()
    watch.exiting()
    assert board.snapshot().blocked(0) == ("exit", EXITING_PRIMITIVE)


def test_the_sampler_survives_a_stack_torn_down_while_it_looks(
    board: Board, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walking another thread's frames while it unwinds can hand back anything as a
    frame (CI saw a cell object): that sample says nothing, the next ones still see."""
    import sys

    real = sys._current_frames
    broken = {"left": 3}

    def torn() -> dict[int, Any]:
        if broken["left"]:
            broken["left"] -= 1
            return {threading.main_thread().ident or 0: object()}  # not a frame
        return real()

    monkeypatch.setattr(sys, "_current_frames", torn)
    q = mp.Queue()
    watch.sample({id(q): 1})
    seen = _seen_while(board, lambda: q.put("x"))
    assert q.get() == "x"
    assert broken["left"] == 0 and seen == [("get", 1)]


def test_the_sampler_takes_the_stacks_with_the_collector_off(
    board: Board, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CPython before 3.11.9 (gh-106883): a collection inside sys._current_frames() can
    # deadlock every thread of the process (CI hung so in this file's tests).
    import gc
    import sys

    states: list[bool] = []
    real = sys._current_frames

    def recording() -> dict[int, object]:
        states.append(gc.isenabled())
        return real()

    monkeypatch.setattr(sys, "_current_frames", recording)
    q = mp.Queue()
    watch.sample({id(q): 1})
    time.sleep(4 * watch.SAMPLE_INTERVAL_S)
    assert states and not any(states)
    assert gc.isenabled()  # on again between samples


def test_the_sampler_leaves_nothing_to_the_collector(board: Board) -> None:
    # sys._current_frames() holds the sampler's own frame, which held the dict in turn:
    # each sample of a recv() left a cycle of frames and their locals for the collector
    # (on Python 3.13, collecting a BytesIO of Connection.recv printed a BufferError).
    a, b = mp.Pipe()
    watch.sample({id(a): 2})
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        end = time.monotonic() + 10 * watch.SAMPLE_INTERVAL_S
        while time.monotonic() < end:
            b.send("x")
            a.recv()
            time.sleep(0.001)  # the sampler looks while recv() runs, now and then
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert "frame" not in left, sorted(set(left))
