"""The deadlock detector's reasoning over names: who waits, who could wake them."""

from __future__ import annotations

from topo.deadlock import EXITING, Wait, Waiter, find_deadlock


def test_two_readers_of_each_other_are_a_deadlock() -> None:
    waiters = [Waiter("a", True, False), Waiter("b", True, False)]
    waits = {"a": Wait("recv", "q"), "b": Wait("recv", "q")}
    lines = find_deadlock(waiters, waits, {}, lambda wait, w: ["b" if w == "a" else "a"])
    assert lines == [
        "a waits in recv() on 'q'; its only peer is 'b' (blocked in recv() on 'q')",
        "b waits in recv() on 'q'; its only peer is 'a' (blocked in recv() on 'q')",
    ]


def test_a_running_peer_means_no_deadlock() -> None:
    waiters = [Waiter("reader", True, False), Waiter("writer", True, False)]
    waits = {"reader": Wait("get", "q")}
    assert find_deadlock(waiters, waits, {}, lambda wait, w: ["writer"]) is None


def test_a_running_daemon_that_can_help_means_no_deadlock() -> None:
    waiters = [Waiter("reader", True, False), Waiter("feeder", True, True)]
    waits = {"reader": Wait("get", "q")}
    assert find_deadlock(waiters, waits, {}, lambda wait, w: ["feeder"]) is None


def test_gone_writer_and_held_locks_are_explained() -> None:
    waiters = [
        Waiter("reader", True, False),
        Waiter("feeder", False, False, "exited with code 0"),
    ]
    waits = {"reader": Wait("get", "q")}
    assert find_deadlock(waiters, waits, {}, lambda wait, w: ["feeder"]) == [
        "reader waits in get() on 'q'; its only peer 'feeder' exited with code 0"
    ]
    waiters = [Waiter("p", True, False), Waiter("q", True, False)]
    waits = {"p": Wait("acquire", "y"), "q": Wait("acquire", "x")}
    holders = {"x": "p", "y": "q"}
    assert find_deadlock(waiters, waits, holders, lambda wait, w: ["q" if w == "p" else "p"]) == [
        "p waits in acquire() on 'y', held by 'q' (blocked in acquire() on 'x')",
        "q waits in acquire() on 'x', held by 'p' (blocked in acquire() on 'y')",
    ]


def test_an_exiting_instance_without_queues_is_not_provably_stuck() -> None:
    waiters = [Waiter("w", True, False)]
    assert find_deadlock(waiters, {"w": EXITING}, {}, lambda wait, w: None) is None
    assert str(EXITING) == "exiting, flushing its queues"
    assert str(Wait("put", "x")) == "blocked in put() on 'x'"
