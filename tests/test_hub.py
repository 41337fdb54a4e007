"""topo.backends.ray.hub.Hub, driven with plain asyncio (no Ray).

The proxies of the Ray backend turn the hub's statuses into what multiprocessing
raises or returns; these tests pin those statuses down: when a blocking call returns
EMPTY, FULL, EOF, BROKEN, False or an error, and what the hub holds afterwards. Each
test runs its own event loop (``asyncio.run``); a "blocked" call is a task that has
not finished after the loop ran everything that was ready (``settle``).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from topo.backends.ray.hub import BROKEN, EMPTY, EOF, ERROR, FULL, OK, Hub

SHORT = 0.05  # a timeout that passes
LONG = 10.0  # a timeout that never passes in these tests


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 5))


async def settle() -> None:
    """Let every task that can run, run until it blocks."""
    for _ in range(20):
        await asyncio.sleep(0)


async def forget(hub: Hub, instance: str) -> None:
    done: Any = hub.forget(instance)
    if inspect.isawaitable(done):
        await done


def spawn(aw: Awaitable[Any]) -> asyncio.Task[Any]:
    async def call() -> Any:
        return await aw

    return asyncio.ensure_future(call())


async def timed(aw: Awaitable[Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = await aw
    return result, time.monotonic() - start


# ----- queues -----------------------------------------------------------------------------


def test_get_on_an_empty_queue_is_empty_at_once_or_after_its_timeout() -> None:
    async def main() -> None:
        hub = Hub({"q": {"kind": "queue"}})
        (status, item), took = await timed(hub.get("q", "r/1", False, None))
        assert (status, item) == (EMPTY, None) and took < SHORT
        (status, item), took = await timed(hub.get("q", "r/1", True, SHORT))
        assert (status, item) == (EMPTY, None)
        assert SHORT * 0.8 <= took < 1.0
        assert hub.waits() == {}  # no longer blocked

    run(main)


def test_a_blocked_get_takes_the_next_put_in_order() -> None:
    async def main() -> None:
        hub = Hub({"q": {"kind": "queue"}})
        getter = spawn(hub.get("q", "r/1", True, None))
        await settle()
        assert not getter.done()
        assert hub.waits() == {"r": ("get", "q")}
        assert await hub.put("q", "w/1", b"a", True, None) == OK
        assert await hub.put("q", "w/1", b"b", True, None) == OK
        assert await getter == (OK, b"a")
        assert await hub.get("q", "r/1", True, LONG) == (OK, b"b")
        assert hub.qsize("q") == 0

    run(main)


def test_maxsize_makes_put_full_at_once_or_after_its_timeout() -> None:
    async def main() -> None:
        hub = Hub({"q": {"kind": "queue", "maxsize": 2}})
        assert not hub.full("q")
        assert await hub.put("q", "w/1", b"a", True, None) == OK
        assert await hub.put("q", "w/1", b"b", False, None) == OK
        assert hub.full("q") and hub.qsize("q") == 2
        status, took = await timed(hub.put("q", "w/1", b"x", False, None))
        assert status == FULL and took < SHORT
        status, took = await timed(hub.put("q", "w/1", b"x", True, SHORT))
        assert status == FULL and SHORT * 0.8 <= took < 1.0
        assert hub.qsize("q") == 2  # nothing of the failed puts went in

        putter = spawn(hub.put("q", "w/1", b"c", True, None))  # waits for room
        await settle()
        assert not putter.done() and hub.waits() == {"w": ("put", "q")}
        assert await hub.get("q", "r/1", False, None) == (OK, b"a")
        assert await putter == OK
        got = [await hub.get("q", "r/1", False, None) for _ in range(3)]
        assert got == [(OK, b"b"), (OK, b"c"), (EMPTY, None)]

    run(main)


def test_an_unbounded_queue_is_never_full() -> None:
    async def main() -> None:
        hub = Hub({"q": {"kind": "queue", "maxsize": 0}, "s": {"kind": "simple_queue"}})
        for name in ("q", "s"):
            for i in range(300):
                assert await hub.put(name, "w/1", bytes([i % 256]), False, None) == OK
            assert not hub.full(name) and hub.qsize(name) == 300

    run(main)


def test_get_many_takes_a_batch_in_order_and_at_most_most() -> None:
    async def main() -> None:
        hub = Hub({"q": {"kind": "queue"}})
        assert await hub.put_many("q", [b"1", b"2", b"3", b"4", b"5"]) == OK
        assert await hub.get_many("q", "r/1", True, None, 3) == (OK, [b"1", b"2", b"3"])
        assert await hub.get_many("q", "r/1", True, None) == (OK, [b"4", b"5"])
        assert await hub.get_many("q", "r/1", False, None) == (EMPTY, [])
        assert await hub.get_many("q", "r/1", True, SHORT) == (EMPTY, [])
        # a blocked get_many returns as soon as there is one
        many = spawn(hub.get_many("q", "r/1", True, LONG))
        await settle()
        assert not many.done()
        await hub.put("q", "w/1", b"6", True, None)
        assert await many == (OK, [b"6"])

    run(main)


def test_what_a_stopped_reader_gives_back_is_first_in_line_in_its_order() -> None:
    async def main() -> None:
        hub = Hub({"q": {"kind": "queue"}})
        await hub.put_many("q", [b"a", b"b", b"c", b"d"])
        status, taken = await hub.get_many("q", "r/1", True, None, 2)
        assert (status, taken) == (OK, [b"a", b"b"])
        await hub.give_back("q", taken)
        assert await hub.get_many("q", "s/1", True, None) == (OK, [b"a", b"b", b"c", b"d"])

    run(main)


def test_give_back_wakes_a_blocked_reader() -> None:
    async def main() -> None:
        hub = Hub({"q": {"kind": "queue"}})
        getter = spawn(hub.get("q", "s/1", True, None))
        await settle()
        await hub.give_back("q", [b"x"])
        assert await getter == (OK, b"x")

    run(main)


def test_join_waits_until_every_item_put_is_task_done() -> None:
    async def main() -> None:
        hub = Hub({"q": {"kind": "joinable_queue"}})
        assert await hub.join("q", "j/1") == OK  # nothing put: at once
        await hub.put("q", "w/1", b"a", True, None)
        await hub.put_many("q", [b"b"])
        joiner = spawn(hub.join("q", "j/1"))
        await settle()
        assert not joiner.done() and hub.waits() == {"j": ("join", "q")}
        assert (await hub.get("q", "r/1", True, None))[0] == OK
        assert (await hub.get("q", "r/1", True, None))[0] == OK
        await settle()
        assert not joiner.done()  # taken is not done
        assert await hub.task_done("q") == OK
        await settle()
        assert not joiner.done()  # one of two
        assert await hub.task_done("q") == OK
        assert await joiner == OK
        assert await hub.task_done("q") == ERROR  # called too many times
        assert await hub.join("q", "j/1") == OK

    run(main)


def test_task_done_without_any_put_is_an_error() -> None:
    async def main() -> None:
        hub = Hub({"q": {"kind": "joinable_queue", "maxsize": 3}})
        assert await hub.task_done("q") == ERROR

    run(main)


# ----- pipes ------------------------------------------------------------------------------


def test_a_duplex_pipe_carries_both_ways_in_order() -> None:
    async def main() -> None:
        hub = Hub({"p": {"kind": "pipe", "duplex": True}})
        assert await hub.send("p", 0, b"to 1") == OK
        assert await hub.send("p", 0, b"to 1 again") == OK
        assert await hub.send("p", 1, b"to 0") == OK
        assert await hub.recv("p", "b/1", 1) == (OK, b"to 1")
        assert await hub.recv("p", "b/1", 1) == (OK, b"to 1 again")
        assert await hub.recv("p", "a/1", 0) == (OK, b"to 0")

    run(main)


def test_a_blocked_recv_takes_what_is_sent() -> None:
    async def main() -> None:
        hub = Hub({"p": {"kind": "pipe", "duplex": False}})
        receiver = spawn(hub.recv("p", "r/1", 0))
        await settle()
        assert not receiver.done() and hub.waits() == {"r": ("recv", "p")}
        await hub.send("p", 1, b"hello")  # one-way: end 1 sends to end 0
        assert await receiver == (OK, b"hello")

    run(main)


def test_send_to_a_closed_end_is_broken() -> None:
    async def main() -> None:
        hub = Hub({"p": {"kind": "pipe", "duplex": False}})
        await hub.close_end("p", 0)
        assert await hub.send("p", 1, b"x") == BROKEN
        await hub.open_end("p", 0)  # a restarted reader has its end again
        assert await hub.send("p", 1, b"x") == OK
        assert await hub.recv("p", "r/1", 0) == (OK, b"x")

    run(main)


def test_what_was_sent_before_the_close_is_received_then_eof() -> None:
    async def main() -> None:
        hub = Hub({"p": {"kind": "pipe", "duplex": False}})
        for data in (b"0", b"1", b"2"):
            await hub.send("p", 1, data)
        await hub.close_end("p", 1)
        got = [await hub.recv("p", "r/1", 0) for _ in range(4)]
        assert got == [(OK, b"0"), (OK, b"1"), (OK, b"2"), (EOF, None)]
        assert await hub.recv("p", "r/1", 0) == (EOF, None)  # and again

    run(main)


def test_a_blocked_recv_sees_eof_when_the_other_end_closes() -> None:
    async def main() -> None:
        hub = Hub({"p": {"kind": "pipe", "duplex": True}})
        receiver = spawn(hub.recv("p", "a/1", 0))
        await settle()
        assert not receiver.done()
        await hub.close_end("p", 1)
        assert await receiver == (EOF, None)

    run(main)


def test_poll_waits_up_to_its_timeout_and_counts_eof_as_ready() -> None:
    async def main() -> None:
        hub = Hub({"p": {"kind": "pipe", "duplex": False}})
        (status, ready), took = await timed(hub.recv("p", "r/1", 0, SHORT))
        assert (status, ready) == (OK, False) and SHORT * 0.8 <= took < 1.0
        assert await hub.recv("p", "r/1", 0, 0) == (OK, False)
        poller = spawn(hub.recv("p", "r/1", 0, LONG))
        await settle()
        assert not poller.done() and hub.waits() == {"r": ("poll", "p")}
        await hub.send("p", 1, b"x")
        assert await poller == (OK, True)
        assert await hub.recv("p", "r/1", 0, 0) == (OK, True)  # poll takes nothing
        assert await hub.recv("p", "r/1", 0) == (OK, b"x")
        await hub.close_end("p", 1)
        assert await hub.recv("p", "r/1", 0, 0) == (OK, True)  # recv() would not block: EOF

    run(main)


# ----- locks and semaphores ---------------------------------------------------------------


def test_a_lock_held_elsewhere_times_out_and_is_taken_once_released() -> None:
    async def main() -> None:
        hub = Hub({"lk": {"kind": "lock"}})
        assert await hub.acquire("lk", "a/1", True, None) is True
        assert await hub.acquire("lk", "b/1", False, None) is False
        got, took = await timed(hub.acquire("lk", "b/1", True, SHORT))
        assert got is False and SHORT * 0.8 <= took < 1.0
        assert await hub.acquire("lk", "a/1", True, SHORT) is False  # not re-entrant
        assert hub.holders() == {"lk": "a"}
        waiter = spawn(hub.acquire("lk", "b/1", True, None))
        await settle()
        assert not waiter.done() and hub.waits() == {"b": ("acquire", "lk")}
        assert await hub.release("lk", "a/1") == OK
        assert await waiter is True
        assert hub.holders() == {"lk": "b"}
        assert await hub.release("lk", "b/1") == OK
        assert hub.holders() == {}

    run(main)


def test_releasing_an_unlocked_lock_is_an_error() -> None:
    async def main() -> None:
        hub = Hub({"lk": {"kind": "lock"}})
        problem = await hub.release("lk", "a/1")
        assert problem != OK and "released too many times" in problem
        assert hub.lock_value("lk") == 1
        # a Lock (unlike an RLock) may be released by another process
        await hub.acquire("lk", "a/1", True, None)
        assert await hub.release("lk", "b/1") == OK
        assert hub.lock_value("lk") == 1 and hub.holders() == {}

    run(main)


def test_an_rlock_is_re_entered_by_its_owner_only() -> None:
    async def main() -> None:
        hub = Hub({"rl": {"kind": "rlock"}})
        for _ in range(3):
            assert await hub.acquire("rl", "a/1", True, SHORT) is True
        assert hub.is_owned("rl", "a/1") and not hub.is_owned("rl", "a/2")
        assert await hub.acquire("rl", "a/2", True, SHORT) is False  # another thread
        assert await hub.acquire("rl", "b/1", False, None) is False
        problem = await hub.release("rl", "b/1")
        assert problem != OK and "un-acquired" in problem
        assert await hub.release("rl", "a/1") == OK
        assert await hub.release("rl", "a/1") == OK
        assert await hub.acquire("rl", "b/1", False, None) is False  # still held once
        assert await hub.release("rl", "a/1") == OK
        assert await hub.release("rl", "a/1") != OK  # one release too many
        assert await hub.acquire("rl", "b/1", False, None) is True
        assert hub.holders() == {"rl": "b"}

    run(main)


def test_a_semaphore_counts_and_may_go_above_its_start() -> None:
    async def main() -> None:
        hub = Hub({"s": {"kind": "semaphore", "value": 2}})
        assert await hub.acquire("s", "a/1", False, None) is True
        assert await hub.acquire("s", "b/1", False, None) is True
        assert hub.lock_value("s") == 0
        assert await hub.acquire("s", "c/1", True, SHORT) is False
        assert await hub.release("s", "a/1") == OK
        assert hub.lock_value("s") == 1
        assert await hub.acquire("s", "c/1", False, None) is True
        for who in ("b/1", "c/1", "d/1"):  # d never took one: fine for a Semaphore
            assert await hub.release("s", who) == OK
        assert hub.lock_value("s") == 3

    run(main)


def test_a_bounded_semaphore_refuses_a_release_above_its_start() -> None:
    async def main() -> None:
        hub = Hub({"s": {"kind": "bounded_semaphore", "value": 2}})
        assert await hub.release("s", "a/1") != OK
        assert hub.lock_value("s") == 2
        assert await hub.acquire("s", "a/1", False, None) is True
        assert hub.lock_value("s") == 1
        assert await hub.release("s", "a/1") == OK
        problem = await hub.release("s", "a/1")
        assert problem != OK and "released too many times" in problem
        assert hub.lock_value("s") == 2

    run(main)


def test_a_semaphore_of_zero_blocks_until_released() -> None:
    async def main() -> None:
        hub = Hub({"s": {"kind": "semaphore", "value": 0}})
        waiter = spawn(hub.acquire("s", "a/1", True, None))
        await settle()
        assert not waiter.done()
        assert await hub.release("s", "b/1") == OK
        assert await waiter is True
        assert hub.lock_value("s") == 0

    run(main)


# ----- conditions -------------------------------------------------------------------------


def test_wait_releases_the_lock_and_takes_it_back_with_its_count() -> None:
    async def main() -> None:
        hub = Hub({"c": {"kind": "condition"}})
        lock = "c:lock"  # a condition's own RLock
        await hub.acquire(lock, "a/1", True, None)
        await hub.acquire(lock, "a/1", True, None)  # held twice
        waiter = spawn(hub.cond_wait("c", "a/1", None))
        await settle()
        assert not waiter.done() and hub.waits() == {"a": ("wait", "c")}
        assert await hub.acquire(lock, "b/1", False, None) is True  # released by the wait
        assert await hub.notify("c", "b/1", 1) == OK
        await settle()
        assert not waiter.done()  # notified, but b holds the lock
        assert await hub.release(lock, "b/1") == OK
        assert await waiter is True
        assert hub.is_owned(lock, "a/1")
        assert await hub.acquire(lock, "b/1", False, None) is False
        assert await hub.release(lock, "a/1") == OK
        assert await hub.acquire(lock, "b/1", False, None) is False  # still once
        assert await hub.release(lock, "a/1") == OK
        assert await hub.release(lock, "a/1") != OK
        assert await hub.acquire(lock, "b/1", False, None) is True

    run(main)


def test_a_condition_over_a_named_lock_releases_that_lock() -> None:
    async def main() -> None:
        hub = Hub({"c": {"kind": "condition", "lock": "lk"}, "lk": {"kind": "lock"}})
        await hub.acquire("lk", "a/1", True, None)
        waiter = spawn(hub.cond_wait("c", "a/1", None))
        await settle()
        assert await hub.acquire("lk", "b/1", False, None) is True
        await hub.notify("c", "b/1", None)
        await hub.release("lk", "b/1")
        assert await waiter is True
        assert hub.holders() == {"lk": "a"}

    run(main)


def test_wait_times_out_with_false_and_the_lock_held_again() -> None:
    async def main() -> None:
        hub = Hub({"c": {"kind": "condition"}})
        await hub.acquire("c:lock", "a/1", True, None)
        notified, took = await timed(hub.cond_wait("c", "a/1", SHORT))
        assert notified is False and SHORT * 0.8 <= took < 1.0
        assert hub.is_owned("c:lock", "a/1")
        assert await hub.acquire("c:lock", "b/1", False, None) is False
        assert await hub.cond_wait("c", "a/1", 0) is False

    run(main)


def test_wait_and_notify_without_the_lock_are_errors() -> None:
    async def main() -> None:
        hub = Hub({"c": {"kind": "condition"}})
        assert isinstance(await hub.cond_wait("c", "a/1", SHORT), str)
        assert isinstance(await hub.notify("c", "a/1", 1), str)
        await hub.acquire("c:lock", "a/1", True, None)
        assert isinstance(await hub.cond_wait("c", "b/1", SHORT), str)  # held by another
        assert isinstance(await hub.notify("c", "b/1", None), str)
        assert hub.is_owned("c:lock", "a/1")  # the failed calls did not release it

    run(main)


async def _waiting(hub: Hub, names: list[str]) -> list[asyncio.Task[Any]]:
    tasks = []
    for name in names:
        await hub.acquire("c:lock", f"{name}/1", True, None)
        tasks.append(spawn(hub.cond_wait("c", f"{name}/1", LONG)))
        await settle()
    return tasks


async def _notify(hub: Hub, n: int | None) -> None:
    await hub.acquire("c:lock", "n/1", True, None)
    assert await hub.notify("c", "n/1", n) == OK
    await hub.release("c:lock", "n/1")
    await settle()


async def _leave(hub: Hub, tasks: dict[str, asyncio.Task[Any]]) -> list[str]:
    """The waiters woken so far, each of which releases the lock it took back."""
    woken = []
    for name, task in tasks.items():
        if task.done():
            assert task.result() is True
            assert await hub.release("c:lock", f"{name}/1") == OK
            woken.append(name)
            await settle()
    for name in woken:
        del tasks[name]
    return woken


def test_notify_wakes_one_and_notify_all_wakes_every_waiter() -> None:
    async def main() -> None:
        hub = Hub({"c": {"kind": "condition"}})
        names = ["a", "b", "c", "d"]
        tasks = dict(zip(names, await _waiting(hub, names), strict=True))
        assert not any(t.done() for t in tasks.values())
        await _notify(hub, 1)
        assert await _leave(hub, tasks) == ["a"]  # the first to wait
        await _notify(hub, 1)
        assert await _leave(hub, tasks) == ["b"]
        await _notify(hub, None)
        assert sorted(await _leave(hub, tasks)) == ["c", "d"]
        await _notify(hub, 1)  # nobody waits: nothing happens, nothing breaks
        assert hub.waits() == {}

    run(main)


def test_notify_n_wakes_n() -> None:
    async def main() -> None:
        hub = Hub({"c": {"kind": "condition"}})
        names = ["a", "b", "c"]
        tasks = dict(zip(names, await _waiting(hub, names), strict=True))
        await _notify(hub, 2)
        assert sorted(await _leave(hub, tasks)) == ["a", "b"]
        assert not tasks["c"].done()
        await _notify(hub, 5)  # more than wait: all of them
        assert await _leave(hub, tasks) == ["c"]

    run(main)


def test_a_notify_before_the_wait_is_not_kept() -> None:
    async def main() -> None:
        hub = Hub({"c": {"kind": "condition"}})
        await _notify(hub, None)
        await hub.acquire("c:lock", "a/1", True, None)
        assert await hub.cond_wait("c", "a/1", SHORT) is False

    run(main)


# ----- events -----------------------------------------------------------------------------


def test_an_event_wakes_its_waiters_and_can_be_cleared() -> None:
    async def main() -> None:
        hub = Hub({"e": {"kind": "event"}})
        assert not hub.event_is_set("e")
        got, took = await timed(hub.event_wait("e", "a/1", SHORT))
        assert got is False and SHORT * 0.8 <= took < 1.0
        waiters = [spawn(hub.event_wait("e", f"{w}/1", None)) for w in ("a", "b")]
        await settle()
        assert not any(w.done() for w in waiters)
        assert hub.waits() == {"a": ("wait", "e"), "b": ("wait", "e")}
        await hub.event_set("e")
        assert [await w for w in waiters] == [True, True]
        assert hub.event_is_set("e")
        assert await hub.event_wait("e", "c/1", 0) is True
        hub.event_clear("e")
        assert not hub.event_is_set("e")
        assert await hub.event_wait("e", "c/1", SHORT) is False

    run(main)


# ----- barriers ---------------------------------------------------------------------------


def test_a_barrier_lets_its_parties_through_with_distinct_indexes_again_and_again() -> None:
    async def main() -> None:
        hub = Hub({"b": {"kind": "barrier", "parties": 3}})
        for _ in range(2):
            first = [spawn(hub.barrier_wait("b", f"p{i}/1", None)) for i in range(2)]
            await settle()
            assert not any(t.done() for t in first)
            assert hub.barrier_info("b") == (3, 2, False)
            last = await hub.barrier_wait("b", "p2/1", None)
            results = [await t for t in first] + [last]
            assert {s for s, _ in results} == {OK}
            assert sorted(i for _, i in results) == [0, 1, 2]
            assert last == (OK, 2)  # the last to arrive
            assert hub.barrier_info("b") == (3, 0, False)

    run(main)


def test_a_timeout_breaks_the_barrier_for_every_party() -> None:
    async def main() -> None:
        hub = Hub({"b": {"kind": "barrier", "parties": 3}})
        patient = spawn(hub.barrier_wait("b", "p0/1", None))
        await settle()
        (status, index), took = await timed(hub.barrier_wait("b", "p1/1", SHORT))
        assert (status, index) == (BROKEN, -1) and SHORT * 0.8 <= took < 1.0
        assert await patient == (BROKEN, -1)
        assert hub.barrier_info("b")[2] is True
        assert await hub.barrier_wait("b", "p2/1", None) == (BROKEN, -1)  # at once
        await hub.barrier_reset("b")
        assert hub.barrier_info("b") == (3, 0, False)
        parties = [spawn(hub.barrier_wait("b", f"p{i}/1", LONG)) for i in range(3)]
        assert sorted(i for _, i in [await t for t in parties]) == [0, 1, 2]

    run(main)


def test_the_barrier_timeout_of_the_spec_applies_when_wait_has_none() -> None:
    async def main() -> None:
        hub = Hub({"b": {"kind": "barrier", "parties": 2, "timeout": SHORT}})
        (status, _), took = await timed(hub.barrier_wait("b", "p0/1", None))
        assert status == BROKEN and SHORT * 0.8 <= took < 1.0

    run(main)


def test_abort_breaks_the_barrier_for_its_waiters() -> None:
    async def main() -> None:
        hub = Hub({"b": {"kind": "barrier", "parties": 2}})
        waiter = spawn(hub.barrier_wait("b", "p0/1", None))
        await settle()
        assert hub.waits() == {"p0": ("wait", "b")}
        await hub.barrier_abort("b")
        assert await waiter == (BROKEN, -1)
        assert await hub.barrier_wait("b", "p1/1", None) == (BROKEN, -1)
        await hub.barrier_reset("b")
        parties = [spawn(hub.barrier_wait("b", f"p{i}/1", LONG)) for i in range(2)]
        assert sorted([await t for t in parties]) == [(OK, 0), (OK, 1)]

    run(main)


def test_reset_breaks_the_barrier_for_those_waiting_at_it() -> None:
    # threading.Barrier.reset: "any threads waiting on it will receive the
    # BrokenBarrierError exception"; the barrier is usable again at once.
    async def main() -> None:
        hub = Hub({"b": {"kind": "barrier", "parties": 2}})
        waiter = spawn(hub.barrier_wait("b", "p0/1", None))
        await settle()
        await hub.barrier_reset("b")
        assert await waiter == (BROKEN, -1)
        assert hub.barrier_info("b") == (2, 0, False)
        parties = [spawn(hub.barrier_wait("b", f"p{i}/1", LONG)) for i in range(2)]
        assert sorted([await t for t in parties]) == [(OK, 0), (OK, 1)]

    run(main)


# ----- forgetting a stopped instance ------------------------------------------------------


@pytest.mark.parametrize("timeout", [None, LONG], ids=["no-timeout", "timeout"])
def test_a_forgotten_get_does_not_swallow_a_later_put(timeout: float | None) -> None:
    async def main() -> None:
        hub = Hub({"q": {"kind": "queue"}})
        dead = spawn(hub.get("q", "r[0]/7", True, timeout))
        await settle()
        assert hub.waits() == {"r[0]": ("get", "q")}
        await forget(hub, "r[0]")
        await settle()
        assert dead.cancelled()
        assert hub.waits() == {}
        await hub.put("q", "w/1", b"kept", True, None)
        await settle()
        assert hub.qsize("q") == 1
        assert await hub.get("q", "r[1]/1", True, timeout) == (OK, b"kept")

    run(main)


@pytest.mark.parametrize("timeout", [None, LONG], ids=["no-timeout", "timeout"])
def test_a_get_forgotten_before_it_returned_leaves_the_item(timeout: float | None) -> None:
    # The item arrives, and the instance is forgotten before its get() ran again: the
    # get must not take it (it would go to an instance that no longer exists).
    async def main() -> None:
        hub = Hub({"q": {"kind": "queue"}})
        dead = spawn(hub.get_many("q", "r[0]/7", True, timeout))
        await settle()
        await hub.put_many("q", [b"a", b"b"])
        await forget(hub, "r[0]")
        await settle()
        assert dead.cancelled()
        assert hub.drain(10) == {"q": [b"a", b"b"]}

    run(main)


def test_a_forgotten_acquire_does_not_take_the_lock() -> None:
    async def main() -> None:
        hub = Hub({"lk": {"kind": "lock"}, "p": {"kind": "pipe", "duplex": False}})
        await hub.acquire("lk", "a/1", True, None)
        dead = spawn(hub.acquire("lk", "b/1", True, None))
        reader = spawn(hub.recv("p", "c/1", 0))
        await settle()
        assert hub.waits() == {"b": ("acquire", "lk"), "c": ("recv", "p")}
        await forget(hub, "b")
        await forget(hub, "c")
        await settle()
        assert dead.cancelled() and reader.cancelled() and hub.waits() == {}
        await hub.release("lk", "a/1")
        await hub.send("p", 1, b"x")
        await settle()
        assert hub.holders() == {} and hub.lock_value("lk") == 1
        assert hub.drain(10) == {"p": [b"x"]}

    run(main)


def test_forget_spares_the_other_instances() -> None:
    async def main() -> None:
        hub = Hub({"q": {"kind": "queue"}})
        kept = spawn(hub.get("q", "r[1]/1", True, None))
        await settle()
        await forget(hub, "r[0]")  # nothing pending: nothing to do
        await hub.put("q", "w/1", b"x", True, None)
        assert await kept == (OK, b"x")

    run(main)


# ----- the end: drain -----------------------------------------------------------------------


def test_drain_returns_what_is_left_in_queues_and_pipes() -> None:
    async def main() -> None:
        hub = Hub(
            {
                "q": {"kind": "queue"},
                "empty": {"kind": "queue"},
                "p": {"kind": "pipe", "duplex": True},
            }
        )
        await hub.put_many("q", [b"1", b"2", b"3"])
        await hub.send("p", 0, b"to 1")
        await hub.send("p", 1, b"to 0")
        assert hub.drain(2) == {"q": [b"1", b"2"], "p": [b"to 0", b"to 1"]}

    run(main)


# ----- state: value, array, dict, list, namespace -------------------------------------------


def test_value_and_array_read_and_write() -> None:
    hub = Hub({"v": {"kind": "value", "init": 0}, "a": {"kind": "array", "init": [1, 2, 3, 4]}})
    assert hub.read("v") == 0
    hub.write("v", 5)
    assert hub.read("v") == 5
    assert hub.apply("v", lambda x: x * 10) == 50 and hub.read("v") == 50
    assert hub.read("a", 0) == 1 and hub.read("a", -1) == 4
    assert hub.read("a", slice(1, 3)) == [2, 3]
    hub.write("a", 10, 0)
    hub.write("a", [20, 30], slice(1, 3))
    assert hub.read("a") == [10, 20, 30, 4]
    with pytest.raises(IndexError):
        hub.read("a", 4)
    with pytest.raises(IndexError):
        hub.write("a", 1, 4)
    assert hub.snapshot() == {"v": 50, "a": [10, 20, 30, 4]}


def test_an_array_keeps_its_length() -> None:
    # multiprocessing.Array: "Can only assign sequence of same size"
    hub = Hub({"a": {"kind": "array", "init": [1, 2, 3]}})
    with pytest.raises(ValueError):
        hub.write("a", [7, 8, 9], slice(0, 2))
    with pytest.raises(ValueError):
        hub.write("a", [], slice(None))
    assert hub.read("a") == [1, 2, 3]
    hub.write("a", [7, 8, 9], slice(None))
    assert hub.read("a") == [7, 8, 9]
    hub = Hub({"c": {"kind": "array", "init": bytearray(b"ab")}})
    with pytest.raises(ValueError):
        hub.write("c", b"xyz", slice(0, 2))
    hub.write("c", b"xy", slice(0, 2))
    assert hub.read("c") == bytearray(b"xy")


def test_a_value_has_an_rlock_of_its_own() -> None:
    async def main() -> None:
        hub = Hub({"v": {"kind": "value", "init": 0}})
        assert await hub.acquire("v:lock", "a/1", True, None) is True
        assert await hub.acquire("v:lock", "a/1", True, None) is True
        assert await hub.acquire("v:lock", "b/1", True, SHORT) is False
        hub.write("v", hub.read("v") + 1)
        await hub.release("v:lock", "a/1")
        await hub.release("v:lock", "a/1")
        assert await hub.acquire("v:lock", "b/1", False, None) is True
        assert hub.read("v") == 1

    run(main)


def test_dict_list_and_namespace_calls_act_on_the_hub_copy() -> None:
    hub = Hub(
        {
            "d": {"kind": "dict", "init": {"a": 1}},
            "l": {"kind": "list", "init": [1]},
            "ns": {"kind": "namespace", "init": {"x": 1}},
        }
    )
    hub.call("d", "__setitem__", ("b", 2), {})
    hub.call("d", "update", (), {"c": 3})
    assert hub.call("d", "get", ("z", 0), {}) == 0
    assert hub.call("d", "pop", ("a",), {}) == 1
    assert hub.call("d", "__contains__", ("a",), {}) is False
    assert hub.call("d", "__len__", (), {}) == 2
    with pytest.raises(KeyError):
        hub.call("d", "__getitem__", ("a",), {})
    copied = hub.call("d", "copy", (), {})
    copied["x"] = 1  # a copy: the hub's dict does not change
    assert hub.read("d") == {"b": 2, "c": 3}

    hub.call("l", "append", (2,), {})
    hub.call("l", "extend", ([3, 4],), {})
    assert hub.call("l", "__getitem__", (slice(1, 3),), {}) == [2, 3]
    assert hub.call("l", "pop", (), {}) == 4
    hub.call("l", "__setitem__", (0, 10), {})
    assert hub.read("l") == [10, 2, 3]

    assert hub.call("ns", "__getattr__", ("x",), {}) == 1
    hub.call("ns", "__setattr__", ("y", [1, 2]), {})
    hub.call("ns", "__delattr__", ("x",), {})
    with pytest.raises(AttributeError):
        hub.call("ns", "__getattr__", ("x",), {})
    assert hub.snapshot() == {"d": {"b": 2, "c": 3}, "l": [10, 2, 3], "ns": {"y": [1, 2]}}


def test_the_declared_init_is_copied_and_the_snapshot_too() -> None:
    init = {"k": [1]}
    hub = Hub({"d": {"kind": "dict", "init": init}})
    hub.call("d", "__getitem__", ("k",), {})
    hub.state["d"]["k"].append(2)
    assert init == {"k": [1]}
    snap = hub.snapshot()
    snap["d"]["k"].append(3)
    assert hub.read("d") == {"k": [1, 2]}


def test_progress_grows_with_completed_operations() -> None:
    async def main() -> None:
        hub = Hub({"q": {"kind": "queue"}, "v": {"kind": "value", "init": 0}})
        before = hub.progress()
        await hub.put("q", "w/1", b"x", True, None)
        await hub.get("q", "r/1", True, None)
        hub.write("v", 1)
        assert hub.progress() >= before + 3
        idle = hub.progress()
        await hub.get("q", "r/1", True, SHORT)  # nothing happened
        assert hub.progress() == idle

    run(main)


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        Hub({"x": {"kind": "ndarray"}})
