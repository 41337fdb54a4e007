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
