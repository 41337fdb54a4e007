"""Small targets for the fault-injection suite (tests/e2e/test_supervision.py).

Each spec beside this module names them as ``faults:<function>``. A target that the
test must wait for prints a line first (``ready``...), which the test watches for on
topo's stderr instead of sleeping for a fixed time.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

FOREVER_S = 600.0  # longer than any test: only topo can end such an instance


def say(text: str) -> None:
    print(text, flush=True)


def answer(value: Any = 42) -> Any:
    """Finish at once with ``value``."""
    return value


def sleep_forever() -> None:
    say("ready")
    time.sleep(FOREVER_S)


def ignore_sigterm() -> None:
    """Survive SIGTERM (saying so), so that only SIGKILL ends this instance."""

    def on_sigterm(signum: int, frame: Any) -> None:
        say("ignoring SIGTERM")

    signal.signal(signal.SIGTERM, on_sigterm)
    say("ready")
    end = time.monotonic() + FOREVER_S
    while time.monotonic() < end:
        time.sleep(0.05)


def raise_error(message: str = "kaboom") -> None:
    say("about to raise")
    raise ValueError(message)


def kill_self() -> None:
    say("about to die")
    os.kill(os.getpid(), signal.SIGKILL)


def hold_lock_and_die(lock: Any, held: Any) -> None:
    """Take ``lock``, tell the others (event ``held``), then get killed holding it."""
    lock.acquire()
    held.set()
    say("holding the lock")
    time.sleep(0.2)  # let the waiter block on the lock
    os.kill(os.getpid(), signal.SIGKILL)


def wait_for_lock(lock: Any, held: Any) -> str:
    held.wait()
    say("waiting for the lock")
    with lock:
        return "got the lock"


def meet(start: Any, arrived: Any) -> int:
    """Tell the quitter that this party is about to wait, then wait at the barrier."""
    arrived.release()
    return int(start.wait())


def quit_before_meeting(start: Any, arrived: Any, parties: int) -> None:
    """A party of barrier ``start`` that dies once the other ``parties`` wait there."""
    for _ in range(parties):
        arrived.acquire()
    time.sleep(0.3)  # from arrived.release() into start.wait()
    say("quitting")
    os._exit(3)


def fail_once(ctx: Any) -> str:
    """Exit 1 on the first attempt, succeed on the next (a marker in the run's folder)."""
    marker = Path(ctx.run_dir) / f"{ctx.name}.tried"
    if not marker.exists():
        marker.write_text("tried\n")
        say("first attempt fails")
        raise SystemExit(1)
    say("second attempt succeeds")
    return "second try"


def always_fail() -> None:
    say("failing")
    raise SystemExit(1)


def recv_first(conn: Any) -> Any:
    say("receiving")
    return conn.recv()


def get_one(inbox: Any) -> Any:
    say("getting")
    return inbox.get()


def write_nothing(out: Any) -> str:
    say("leaving without writing")
    return "wrote nothing"


def put_later(out: Any, delay: float, value: Any) -> Any:
    time.sleep(delay)
    out.put(value)
    return value


def lock_in_order(first: Any, second: Any, both: Any) -> str:
    """Take ``first``, meet the other instance, then take ``second``."""
    with first:
        both.wait()
        say("taking the second lock")
        with second:
            return "took both"


def serve_forever(hits: Any) -> None:
    say("serving")
    while True:
        hits.value += 1
        time.sleep(0.05)


def short_task(hits: Any) -> str:
    end = time.monotonic() + 10.0
    while hits.value < 3 and time.monotonic() < end:  # the daemon is up and looping
        time.sleep(0.05)
    return "done"


def hold_manager_dict(seen: Any) -> None:
    seen[os.getpid()] = "here"
    say("ready")
    time.sleep(FOREVER_S)


def hold_value_lock(hits: Any, holding: Any) -> None:
    """Take the lock of the synchronized value ``hits`` and keep it until stopped."""
    with hits.get_lock():
        hits.value += 1
        holding.set()
        say("holding the value's lock")
        time.sleep(FOREVER_S)


def wait_for_event(event: Any) -> str:
    event.wait()
    return "done"


def fill_then_read(out: Any, inbox: Any) -> str:
    """Put two items into a queue of one slot before reading anything."""
    say("filling")
    out.put(1)
    out.put(2)
    return str(inbox.get())


def ping(conn: Any, seconds: float) -> int:
    """Bounce messages off the peer for ``seconds``: both sides are in recv() nearly
    all the time, and never stuck."""
    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        conn.send(rounds)
        conn.recv()
        rounds += 1
    conn.send(None)
    return rounds


def pong(conn: Any) -> int:
    rounds = 0
    while (message := conn.recv()) is not None:
        conn.send(message)
        rounds += 1
    return rounds


def join_unfinished(tasks: Any) -> str:
    tasks.put("work nobody marks done")
    say("joining")
    tasks.join()
    return "joined"


def take_without_done(tasks: Any) -> Any:
    return tasks.get()


def ask_through_a_helper_thread(tasks: Any, results: Any, delay: float) -> Any:
    """The main thread waits for the answer while a helper thread of the same instance
    sends the question later: the instance is not blocked, its helper can progress."""
    import threading

    def ask() -> None:
        time.sleep(delay)
        tasks.put(21)

    threading.Thread(target=ask).start()
    say("waiting for the answer")
    return results.get()


def double(tasks: Any, results: Any) -> Any:
    n = tasks.get()
    results.put(2 * n)
    return n


def send_and_leave(conn: Any, count: int) -> int:
    for n in range(count):
        conn.send(n)
    return count


def receive_until_eof(conn: Any) -> int:
    """Count what comes until the sending end is closed everywhere (EOFError)."""
    received = 0
    while True:
        try:
            conn.recv()
        except EOFError:
            return received
        received += 1


def wait_for(go: Any) -> str:
    go.wait()
    return "went"


def leave_unset(go: Any) -> str:
    return "left without setting it"


def put_unpicklable(out: Any) -> str:
    out.put(1)
    out.put(lambda: 1)  # a multiprocessing.Queue pickles it later, in its feeder thread
    say("put it")
    time.sleep(FOREVER_S)  # the lost put must end the run, not the target
    return "never"


def get_forever(inbox: Any, frames: Any = None) -> Any:
    while True:
        inbox.get()


def put_then(out: Any, n: int, then: str) -> int:
    """Put 0..n-1, then return, raise or wait to be stopped."""
    for i in range(n):
        out.send(i) if hasattr(out, "send") else out.put(i)
    time.sleep(0.5)  # a queue's feeder thread has flushed into the pipe by then
    say("all put")
    if then == "raise":
        raise RuntimeError("failing with messages in flight")
    if then == "sleep":
        time.sleep(FOREVER_S)
    return n


def start_children(how: str, then: str, token: str) -> str:
    """Start a grandchild that would live 300 s (marked with ``token`` on its command
    line, so that a test finds it wherever it went), then return, raise or sleep."""
    import subprocess
    import sys

    sleeper = [sys.executable, "-c", "import time; time.sleep(300)", token]
    if how == "popen":
        subprocess.Popen(sleeper)
    elif how == "fork_exec":
        if os.fork() == 0:
            os.execv(sys.executable, sleeper)
    elif how == "setsid":  # a daemon: out of the instance's group and session
        subprocess.Popen(sleeper, start_new_session=True)
    elif how == "pool":  # its workers stay in topo's session, where the test looks
        import multiprocessing

        pool = multiprocessing.get_context("fork").Pool(2)
        pool.apply_async(time.sleep, (300,))
    time.sleep(0.3)
    say("started")
    if then == "raise":
        raise RuntimeError("failing with children running")
    if then == "sleep":
        time.sleep(FOREVER_S)
    return "left them"


def hold_channels(frames: Any, tasks: Any, gate: Any) -> None:
    say("ready")
    time.sleep(FOREVER_S)


def exit_with(code: int) -> None:
    """sys.exit(code) from the target."""
    say(f"exiting with {code}")
    sys.exit(code)


def send_numbers(out: Any, n: int) -> int:
    """Put 0..n-1, then None."""
    for number in range(n):
        out.put(number)
    out.put(None)
    return n


def sum_numbers(inbox: Any) -> int:
    """Sum what comes until None."""
    total = 0
    while (number := inbox.get()) is not None:
        total += number
    return total


# ----- semantics.yaml: what multiprocessing's objects do, observed through the bound
# objects of any backend (tests/e2e/test_ray.py compares the local backend and Ray).
# Each target returns a dict of observations that do not depend on timing.


def _raises(expected: type[BaseException], fn: Any, *args: Any, **kwargs: Any) -> Any:
    """True when ``fn(*args, **kwargs)`` raises ``expected``; else what happened."""
    try:
        fn(*args, **kwargs)
    except expected:
        return True
    except Exception as e:
        return f"raised {type(e).__name__}: {e}"
    return "did not raise"


def _took_at_least(seconds: float, fn: Any, *args: Any) -> tuple[Any, bool]:
    start = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - start >= seconds * 0.8


SHORT_S = 0.05  # a timeout meant to pass
LONG_S = 30.0  # a timeout meant never to pass


def solo_semantics(
    q: Any,
    simple: Any,
    own_jobs: Any,
    plain: Any,
    arr: Any,
    table: Any,
    items: Any,
    ns: Any,
    rl: Any,
    sem: Any,
    bsem: Any,
    ev: Any,
) -> dict[str, Any]:
    """Everything one instance can observe alone."""
    import queue
    import threading

    seen: dict[str, Any] = {}
    # a queue of maxsize 2
    q.put("a")
    q.put("b")
    seen["put_nowait_full"] = _raises(queue.Full, q.put_nowait, "c")
    seen["put_timeout_full"] = _raises(queue.Full, q.put, "c", timeout=SHORT_S)
    seen["full"] = [q.qsize(), q.full(), q.empty()]
    seen["got"] = [q.get(timeout=LONG_S), q.get(timeout=LONG_S)]
    seen["get_timeout_empty"] = _raises(queue.Empty, q.get, timeout=SHORT_S)
    seen["get_nowait_empty"] = _raises(queue.Empty, q.get_nowait)
    seen["emptied"] = [q.qsize(), q.full(), q.empty()]
    # a simple queue
    simple.put(1)
    simple.put([2])
    seen["simple_empty_after_put"] = simple.empty()
    seen["simple_got"] = [simple.get(), simple.get()]
    seen["simple_empty_after_get"] = simple.empty()
    # a joinable queue: put counts at once, before the item is read
    own_jobs.put("job")
    own_jobs.task_done()
    seen["own_job"] = own_jobs.get(timeout=LONG_S)
    own_jobs.join()  # nothing unfinished: at once
    seen["own_task_done_too_many"] = _raises(ValueError, own_jobs.task_done)
    # a value
    seen["plain"] = plain.value
    plain.value = 2.5
    seen["plain_after"] = plain.value
    # an array of 4 ints
    seen["arr"] = [arr[0], arr[-1], arr[1:3], len(arr), list(arr)]
    arr[0] = 10
    arr[1:3] = [20, 30]
    with arr.get_lock():
        arr[3] += 1
    seen["arr_after"] = arr[:]
    seen["arr_wrong_size"] = _raises(ValueError, arr.__setitem__, slice(0, 2), [1, 2, 3])
    seen["arr_out_of_range"] = _raises(IndexError, arr.__getitem__, 4)
    # a dict
    table["b"] = 2
    table.update(c=3)
    seen["dict"] = [
        table["a"],
        table.get("z", 0),
        "a" in table,
        "z" in table,
        len(table),
        table.pop("a"),
        sorted(table.keys()),
        table.setdefault("d", 4),
    ]
    seen["dict_missing"] = _raises(KeyError, table.__getitem__, "a")
    # a list
    items.append(2)
    items.extend([3, 4])
    seen["list"] = [items[0], items[1:3], len(items), items.pop(), items.index(3), 3 in items]
    items.insert(0, 0)
    items[1] = 10
    seen["list_after"] = list(items)
    seen["list_out_of_range"] = _raises(IndexError, items.__getitem__, 10)
    # a namespace
    ns.y = "why"
    seen["ns"] = [ns.x, ns.y, hasattr(ns, "missing"), getattr(ns, "missing", "default")]
    del ns.x
    seen["ns_deleted"] = hasattr(ns, "x")
    # an rlock: re-entered by its owner, not taken or released by another thread
    seen["rlock_twice"] = [rl.acquire(), rl.acquire(timeout=SHORT_S)]
    other: dict[str, Any] = {}

    def from_another_thread() -> None:
        other["acquire"] = rl.acquire(timeout=SHORT_S)
        other["release"] = _raises(AssertionError, rl.release)

    helper = threading.Thread(target=from_another_thread)
    helper.start()
    helper.join()
    seen["rlock_other_thread"] = other
    rl.release()
    rl.release()
    seen["rlock_released_too_often"] = _raises(AssertionError, rl.release)
    # a semaphore of 2
    seen["sem"] = [sem.acquire(), sem.acquire(False), sem.acquire(timeout=SHORT_S)]
    seen["sem_value"] = sem.get_value()
    for _ in range(3):
        sem.release()  # one more than taken: fine for a Semaphore
    seen["sem_value_after"] = sem.get_value()
    # a bounded semaphore of 1
    seen["bsem"] = [bsem.acquire(), bsem.acquire(False), bsem.acquire(timeout=SHORT_S)]
    bsem.release()
    seen["bsem_released_too_often"] = _raises(ValueError, bsem.release)
    seen["bsem_value"] = bsem.get_value()
    # an event
    seen["event"] = [ev.is_set(), *_took_at_least(SHORT_S, ev.wait, SHORT_S)]
    ev.set()
    seen["event_set"] = [ev.is_set(), ev.wait(SHORT_S), ev.wait()]
    ev.clear()
    seen["event_cleared"] = [ev.is_set(), ev.wait(0)]
    return seen


def count_up(counter: Any, times: int) -> int:
    """``times`` increments under the value's own lock, racing the other replicas."""
    for _ in range(times):
        with counter.get_lock():
            counter.value += 1
    return times


def join_jobs(jobs: Any, done: Any, n: int) -> dict[str, Any]:
    for i in range(n):
        jobs.put(i)
    jobs.join()
    return {"joined": True, "done_when_joined": done.value}


def do_jobs(jobs: Any, done: Any, n: int) -> dict[str, Any]:
    got = []
    for _ in range(n):
        got.append(jobs.get(timeout=LONG_S))
        done.value += 1  # before task_done: the joiner must see every one
        jobs.task_done()
    return {"got": got, "task_done_too_many": _raises(ValueError, jobs.task_done)}


def pipe_writer(conn: Any, go: Any) -> int:
    go.wait(LONG_S)
    for i in range(3):
        conn.send(i)
    conn.send({"a": [1, 2]})
    conn.send_bytes(b"raw")
    return 5


def pipe_reader(conn: Any, go: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {"poll_before": list(_took_at_least(SHORT_S, conn.poll, SHORT_S))}
    go.set()
    seen["poll_after"] = conn.poll(LONG_S)
    seen["got"] = [conn.recv() for _ in range(4)]
    seen["got_bytes"] = conn.recv_bytes()
    seen["eof"] = _raises(EOFError, conn.recv)  # once the writer has returned
    seen["poll_at_eof"] = conn.poll(0)
    return seen


def hold_until_tried(lk: Any, held: Any, tried: Any) -> str:
    lk.acquire()
    held.set()
    tried.wait(LONG_S)
    lk.release()
    return "released"


def try_held_lock(lk: Any, held: Any, tried: Any) -> dict[str, Any]:
    held.wait(LONG_S)
    seen: dict[str, Any] = {
        "timeout": list(_took_at_least(SHORT_S, lk.acquire, True, SHORT_S)),
        "nonblocking": lk.acquire(False),
    }
    tried.set()
    seen["eventually"] = lk.acquire(timeout=LONG_S)
    lk.release()
    seen["release_unlocked"] = _raises(ValueError, lk.release)
    return seen


def wait_on_condition(cond: Any, flag: Any, go: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {"wait_unlocked": _raises(AssertionError, cond.wait, SHORT_S)}
    with cond:
        seen["wait_timeout"] = list(_took_at_least(SHORT_S, cond.wait, SHORT_S))
        seen["wait_keeps_the_lock"] = cond.acquire(False)  # its RLock, taken back
        cond.release()
    go.set()
    with cond:
        seen["wait_for"] = cond.wait_for(lambda: flag.value == 1, timeout=LONG_S)
        seen["flag"] = flag.value
    return seen


def notify_condition(cond: Any, flag: Any, go: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {"notify_unlocked": _raises(AssertionError, cond.notify)}
    go.wait(LONG_S)
    with cond:
        flag.value = 1
        cond.notify()
    return seen


def barrier_semantics(gate: Any, indexes: Any, ctx: Any) -> dict[str, Any]:
    """Two parties: through the barrier twice, then a reset while one waits, then one
    party alone (a timeout breaks the barrier; abort; reset)."""
    import threading

    Broken = threading.BrokenBarrierError
    seen: dict[str, Any] = {"parties": gate.parties}
    indexes.append(gate.wait(LONG_S))
    gate.wait(LONG_S)  # both appended
    if ctx.replica == 0:
        seen["indexes"] = sorted(indexes)
        seen["reset_breaks_the_waiter"] = _raises(Broken, gate.wait, LONG_S)
    else:
        deadline = time.monotonic() + LONG_S
        while gate.n_waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.reset()
    seen["after_reset"] = gate.wait(LONG_S) in (0, 1)  # usable again
    if ctx.replica == 0:  # alone from here on: the other party returns
        seen["timeout_breaks"] = list(_took_at_least(SHORT_S, _raises, Broken, gate.wait, SHORT_S))
        seen["broken"] = gate.broken
        seen["broken_at_once"] = _raises(Broken, gate.wait, LONG_S)
        gate.reset()
        seen["mended"] = gate.broken
        gate.abort()
        seen["aborted"] = [gate.broken, _raises(Broken, gate.wait, LONG_S)]
        gate.reset()
        indexes.sort()
    return seen


def take_then_raise(inbox: Any, n: int) -> None:
    """Take n items (a pipe transport's reader has read ahead by then), then fail."""
    for _ in range(n):
        inbox.get()
    time.sleep(1.0)  # the writer has put everything by then
    raise RuntimeError(f"failing after taking {n}")


def unlucky_draws(ctx: Any, failures: int) -> list[float]:
    """Fail on the first ``failures`` attempts, saying the random draw of each."""
    import random

    draw = random.random()
    say(f"attempt {ctx.attempt} seed {ctx.seed} draw {draw!r}")
    if ctx.attempt < failures:
        raise SystemExit(1)
    return [ctx.attempt, ctx.seed, draw]
