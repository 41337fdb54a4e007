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


def test_replicas_in_the_same_wait_share_one_line_at_any_scale() -> None:
    workers = [f"worker[{i}]" for i in range(256)]
    waiters = [Waiter(n, True, False) for n in workers]
    waiters.append(Waiter("starter", False, False, "exited with code 0"))
    waits = {n: Wait("wait", "go") for n in workers}
    every_other_user = lambda wait, w: [n for n in [*workers, "starter"] if n != w]  # noqa: E731
    lines = find_deadlock(waiters, waits, {}, every_other_user)
    assert lines == [
        "worker[0..255] wait in wait() on 'go'; their peers: 'starter' (exited with code 0)"
    ]


def test_groups_name_gaps_and_keep_peers_grouped() -> None:
    names = ["w[0]", "w[1]", "w[2]", "w[5]"]
    waiters = [Waiter(n, True, False) for n in names]
    waiters += [Waiter(f"r[{i}]", False, False, "exited with code 0") for i in range(3)]
    waits = {n: Wait("get", "q") for n in names}
    readers = lambda wait, w: ["r[0]", "r[1]", "r[2]"]  # noqa: E731
    assert find_deadlock(waiters, waits, {}, readers) == [
        "w[0..2,5] wait in get() on 'q'; their peers: 'r[0..2]' (exited with code 0)"
    ]
