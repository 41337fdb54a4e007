"""Conformance: every queue transport behaves as multiprocessing's own queues.

The same tests run against ``multiprocessing.Queue`` / ``JoinableQueue`` /
``SimpleQueue`` ("mp") and against topo's transports (topo/backends/local/transport.py):
"socket" takes any number of readers, "pipe" exactly one (multi-reader tests run on
the others). Where topo's transports do better than multiprocessing on purpose (an
unpicklable object raises in put(), a big message cannot be torn by a killed writer),
the test says so.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing import queues as mp_queues
from typing import Any

import pytest

from topo.backends.local import transport

CTX = multiprocessing.get_context("fork")  # fast; spawn is covered below and end to end
TRANSPORTS = ["mp", "socket", "pipe"]
MANY_READERS = ["mp", "socket"]

Make = Callable[..., Any]


def _make(transport_name: str, kind: str = "queue", maxsize: int = 0, ctx: Any = CTX) -> Any:
    if transport_name == "mp":
        if kind == "simple_queue":
            return ctx.SimpleQueue()
        return (ctx.JoinableQueue if kind == "joinable_queue" else ctx.Queue)(maxsize)
    return transport.build(kind, transport_name, maxsize, ctx)


@pytest.fixture
def make(request: pytest.FixtureRequest) -> Iterator[Make]:
    made: list[Any] = []

    def factory(kind: str = "queue", maxsize: int = 0, ctx: Any = CTX) -> Any:
        q = _make(request.param, kind, maxsize, ctx)
        made.append(q)
        return q

    yield factory
    for q in made:
        if hasattr(q, "free"):
            q.free()


def every(names: list[str]) -> Any:
    return pytest.mark.parametrize("make", names, indirect=True)


def _finish(*procs: Any, timeout: float = 20) -> list[int | None]:
    for p in procs:
        p.join(timeout)
        if p.is_alive():
            p.kill()
            p.join()
    return [p.exitcode for p in procs]


# ----- the classes and their methods ---------------------------------------------------------


@every(TRANSPORTS)
def test_isinstance_of_multiprocessing_classes(make: Make) -> None:
    assert isinstance(make(), mp_queues.Queue)
    joinable = make("joinable_queue")
    assert isinstance(joinable, mp_queues.JoinableQueue)
    assert isinstance(joinable, mp_queues.Queue)
    assert isinstance(make("simple_queue"), mp_queues.SimpleQueue)


VALUES: list[Any] = [
    0,
    -(2**70),
    1.5,
    "text",
    "é" * 10_000,  # above PIPE_BUF: a pipe's big-message path
    b"\x00" * 100_000,  # above a socket's inline size
    None,
    True,
    (1, "two", [3.0]),
    {"nested": {"list": list(range(1000))}},
    bytearray(b"abc"),
    frozenset({1, 2}),
]


@every(TRANSPORTS)
@pytest.mark.parametrize("kind", ["queue", "joinable_queue", "simple_queue"])
def test_fifo_and_every_picklable_type(make: Make, kind: str) -> None:
    q = make(kind)
    got: list[Any] = []
    # A SimpleQueue's put() waits while its pipe is full: read as it is written.
    reader = threading.Thread(target=lambda: got.extend(q.get() for _ in VALUES))
    reader.start()
    for value in VALUES:
        q.put(value)
    reader.join(20)
    assert got == VALUES
    assert [type(v) for v in got] == [type(v) for v in VALUES]


@every(TRANSPORTS)
def test_numpy_arrays_small_and_big(make: Make) -> None:
    np = pytest.importorskip("numpy")
    q = make()
    arrays = [
        np.arange(10, dtype="int16"),
        np.arange(1 << 20, dtype="float64").reshape(1024, 1024),  # 8 MiB
        np.asfortranarray(np.arange(12).reshape(3, 4)),
        np.arange(100)[::3],  # not contiguous
    ]
    for a in arrays:
        q.put(a)
    for a in arrays:
        got = q.get()
        assert got.dtype == a.dtype and got.shape == a.shape
        assert (got == a).all()
        got[...] = 0  # writable, as multiprocessing's are
    assert q.empty() or q.qsize() == 0


@every(TRANSPORTS)
def test_get_timeouts_and_nowait(make: Make) -> None:
    q = make()
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    assert 0.18 <= time.monotonic() - start < 2
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(block=False)
    q.put("x")
    deadline = time.monotonic() + 2
    while q.empty() and time.monotonic() < deadline:  # mp's feeder puts it in a bit later
        time.sleep(0.01)
    assert q.get(timeout=1) == "x"


@every(TRANSPORTS)
def test_bounded_queue_back_pressure(make: Make) -> None:
    q = make(maxsize=2)
    q.put(1)
    q.put(2)
    assert q.full()
    assert q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    start = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.2)
    assert time.monotonic() - start >= 0.18
    assert q.get(timeout=2) == 1
    q.put(3, timeout=1)
    assert [q.get(timeout=2), q.get(timeout=2)] == [2, 3]
    assert q.qsize() == 0 and not q.full()


@every(TRANSPORTS)
def test_a_full_queue_wakes_its_writer_when_read(make: Make) -> None:
    q = make(maxsize=1)
    q.put("first")

    def reader_later(q: Any) -> None:
        time.sleep(0.3)
        q.get()

    p = CTX.Process(target=reader_later, args=(q,))
    p.start()
    start = time.monotonic()
    q.put("second", timeout=10)  # waits for the reader's get()
    assert time.monotonic() - start >= 0.2
    assert _finish(p) == [0]
    assert q.get(timeout=2) == "second"


@every(TRANSPORTS)
def test_close_and_join_thread(make: Make) -> None:
    q = make()
    with pytest.raises(AssertionError):
        q.join_thread()
    q.put(1)
    q.close()
    q.join_thread()
    with pytest.raises(ValueError, match="is closed"):
        q.put(2)
    with pytest.raises(ValueError, match="is closed"):
        q.get()
    q.cancel_join_thread()


@every(TRANSPORTS)
def test_joinable_task_done_and_join(make: Make) -> None:
    q = make("joinable_queue")
    for i in range(3):
        q.put(i)

    def worker(q: Any) -> None:
        for _ in range(3):
            q.get()
            time.sleep(0.05)
            q.task_done()

    p = CTX.Process(target=worker, args=(q,))
    p.start()
    q.join()  # returns once all three are done
    assert _finish(p) == [0]
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()


@every(TRANSPORTS)
def test_simple_queue_empty_and_close(make: Make) -> None:
    q = make("simple_queue")
    assert q.empty()
    q.put(1)
    assert not q.empty()
    assert q.get() == 1
    q.close()


# ----- across processes ------------------------------------------------------------------------


def _writer(q: Any, who: int, n: int) -> None:
    for i in range(n):
        q.put((who, i))


def _reader(q: Any, results: Any) -> None:
    got = []
    while (item := q.get()) is not None:
        got.append(item)
    results.put(got)


@every(MANY_READERS)
@pytest.mark.timeout(60)
def test_many_writers_and_readers_each_item_once_in_order_per_writer(make: Make) -> None:
    writers, readers, n = 3, 3, 2000
    q = make(maxsize=50)
    results = CTX.SimpleQueue()
    ws = [CTX.Process(target=_writer, args=(q, w, n)) for w in range(writers)]
    rs = [CTX.Process(target=_reader, args=(q, results)) for _ in range(readers)]
    for p in [*ws, *rs]:
        p.start()
    assert _finish(*ws) == [0] * writers
    for _ in rs:
        q.put(None)
    per_reader = [results.get() for _ in rs]
    assert _finish(*rs) == [0] * readers
    everything = sorted(item for got in per_reader for item in got)
    assert everything == sorted((w, i) for w in range(writers) for i in range(n))
    for got in per_reader:  # FIFO per writer, as each reader sees it
        for w in range(writers):
            mine = [i for who, i in got if who == w]
            assert mine == sorted(mine)


@every(TRANSPORTS)
@pytest.mark.timeout(60)
def test_many_writers_one_reader_in_order_per_writer(make: Make) -> None:
    q = make()
    results = CTX.SimpleQueue()
    ws = [CTX.Process(target=_writer, args=(q, w, 3000)) for w in range(4)]
    r = CTX.Process(target=_reader, args=(q, results))
    for p in [*ws, r]:
        p.start()
    assert _finish(*ws) == [0] * 4
    q.put(None)
    got = results.get()
    assert _finish(r) == [0]
    assert len(got) == 12_000
    for w in range(4):
        assert [i for who, i in got if who == w] == list(range(3000))


def _put_many_then_signal(q: Any, done: Any, n: int) -> None:
    for i in range(n):
        q.put(b"x" * 1000 + str(i).encode())
    done.set()  # every put() returned though nobody has read yet


@every(TRANSPORTS)
@pytest.mark.timeout(60)
def test_an_unbounded_put_never_waits_and_the_writer_flushes_before_exiting(make: Make) -> None:
    q = make()
    done = CTX.Event()
    n = 5000  # ~5 MB: more than any pipe or socket buffer holds
    p = CTX.Process(target=_put_many_then_signal, args=(q, done, n))
    p.start()
    assert done.wait(20), "put() waited for a reader"
    time.sleep(0.2)
    assert p.is_alive(), "the writer exited before its items were in the queue"
    got = [q.get(timeout=10) for _ in range(n)]
    assert got[-1].endswith(str(n - 1).encode())
    assert _finish(p) == [0]


@every(TRANSPORTS)
@pytest.mark.timeout(60)
def test_spawned_processes_get_the_queue_by_pickling(make: Make) -> None:
    spawn = multiprocessing.get_context("spawn")
    q = make(maxsize=10, ctx=spawn)
    results = spawn.SimpleQueue()
    w = spawn.Process(target=_writer, args=(q, 0, 500))
    r = spawn.Process(target=_reader, args=(q, results))
    w.start()
    r.start()
    assert _finish(w) == [0]
    q.put(None)
    assert results.get() == [(0, i) for i in range(500)]
    assert _finish(r) == [0]


@every(TRANSPORTS)
def test_a_queue_is_not_pickled_outside_process_start(make: Make) -> None:
    with pytest.raises(RuntimeError, match="inheritance"):
        pickle.dumps(make())


# ----- what cannot be sent, and deaths ---------------------------------------------------------


@every(["socket", "pipe"])
@pytest.mark.parametrize("kind", ["queue", "joinable_queue", "simple_queue"])
def test_an_unpicklable_object_raises_in_put_and_changes_nothing(make: Make, kind: str) -> None:
    # multiprocessing.Queue pickles in its feeder thread, prints a traceback there and
    # drops the item (topo fails such an instance at once: tests/e2e); here put() raises.
    q = make(kind)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        q.put(lambda: 1)
    if kind != "simple_queue":
        assert q.qsize() == 0
    q.put("next")
    assert q.get() == "next"


@every(["socket", "pipe"])
def test_a_change_after_put_is_never_seen(make: Make) -> None:
    q = make()
    item = {"n": 1}
    q.put(item)
    item["n"] = 2  # with multiprocessing, the feeder may pickle it after this
    assert q.get() == {"n": 1}


def _get_forever(q: Any, ready: Any) -> None:
    ready.set()
    q.get()


@pytest.mark.parametrize("make", TRANSPORTS, indirect=True)
@pytest.mark.timeout(60)
def test_a_reader_killed_in_get_takes_nothing_with_it(make: Make, request: Any) -> None:
    q = make()
    ready = CTX.Event()
    p = CTX.Process(target=_get_forever, args=(q, ready))
    p.start()
    assert ready.wait(10)
    time.sleep(0.2)  # in get(), waiting
    p.kill()
    _finish(p)
    q.put("after")
    if request.node.callspec.params["make"] == "mp":
        # multiprocessing's reader died holding the queue's read lock: nobody can
        # get() from this queue any more (a hazard its documentation warns of).
        with pytest.raises(queue.Empty):
            q.get(timeout=1)
        return
    assert q.get(timeout=5) == "after"  # no lock: the queue lives on


def _take_one(q: Any, got: Any) -> None:
    got.put(q.get())
    time.sleep(60)  # killed here, having read (and maybe buffered) more


@every(TRANSPORTS)
@pytest.mark.timeout(60)
def test_a_killed_reader_leaves_the_rest_to_the_next_one(make: Make) -> None:
    # A pipe's reader reads ahead into shared memory: a restarted reader goes on there.
    q = make()
    for i in range(20):
        q.put(i)
    time.sleep(0.1)  # mp's feeder thread
    got = CTX.SimpleQueue()
    p = CTX.Process(target=_take_one, args=(q, got))
    p.start()
    assert got.get() == 0
    os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
    _finish(p)
    assert [q.get(timeout=5) for _ in range(19)] == list(range(1, 20))


def _put_forever(q: Any, size: int, ready: Any) -> None:
    i = 0
    while True:
        q.put((i, b"y" * size))
        i += 1
        if i == 15:
            ready.set()  # then it fills the queue (maxsize 20) and waits in put()


def _whole_items_after_killing_a_writer(q: Any, size: int) -> None:
    ready = CTX.Event()
    p = CTX.Process(target=_put_forever, args=(q, size, ready))
    p.start()
    assert ready.wait(20)
    time.sleep(0.3)
    p.kill()
    _finish(p)
    seen = []
    while True:
        try:
            i, payload = q.get(timeout=1)
        except queue.Empty:
            break
        assert payload == b"y" * size
        seen.append(i)
    assert len(seen) == 20  # the queue was full when the writer died
    assert seen == list(range(seen[0], seen[0] + len(seen)))


@every(TRANSPORTS)
@pytest.mark.timeout(60)
def test_a_writer_killed_mid_put_leaves_only_whole_items(make: Make) -> None:
    _whole_items_after_killing_a_writer(make(maxsize=20), 100)


@every(["socket", "pipe"])
@pytest.mark.timeout(60)
def test_a_writer_killed_mid_put_of_big_items_leaves_only_whole_items(make: Make) -> None:
    # Better than multiprocessing, whose pipe can be left with half of a big message
    # (written in pieces under its lock): here a big message is whole or absent.
    _whole_items_after_killing_a_writer(make(maxsize=20), 200_000)


# ----- the supervisor's view ---------------------------------------------------------------------


@every(["socket", "pipe"])
def test_drain_reads_back_what_is_left_without_waiting(make: Make) -> None:
    q = make()
    values = [1, "two", b"\x00" * 100_000, {"x": list(range(10))}]
    for v in values:
        q.put(v)
    q.get()  # the pipe reader has now buffered the rest in shared memory
    deadline = time.monotonic() + 2
    assert q.drain(100, deadline) == values[1:]
    assert q.drain(100, deadline) == []


def test_the_pipe_leaves_no_file_behind() -> None:
    q = transport.build("queue", "pipe", 0, CTX)
    q.put(b"z" * 1_000_000)  # a file in /dev/shm until read
    prefix = q.shared_files()[:-1]
    assert [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]
    q.free()  # the supervisor's end of the run: unread messages' files go too
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]
