"""What runs in a Ray worker (topo/backends/ray/task.py), without a cluster: the
cancel of a target blocked in a system call, as a Ray worker sees it."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("ray")

# As in a Ray worker: the real SIGINT blocked in the main thread, and ray.cancel
# simulated by _thread.interrupt_main() from another thread while the target sleeps.
# SIGINT's disposition is set by the test, as the worker's shell left it.
WORKER = """
import _thread, os, signal, sys, threading, time
from topo.backends.ray import task

signal.signal(signal.SIGINT, {sigint})
task._sigint_handled()  # as run_instance does first
signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGINT}})
"""

CANCELLED_IN_A_SLEEP = (
    WORKER
    + """
threading.Timer(0.3, _thread.interrupt_main).start()
started = time.monotonic()
try:
    with {wrapper}:
        time.sleep({sleep_s})
except KeyboardInterrupt:
    print(time.monotonic() - started)
    sys.exit(0)
print("slept through the cancel")
"""
)


def _python(script: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout
    )


def _interrupted_after(wrapper: str, sleep_s: float, sigint: str) -> float:
    done = _python(CANCELLED_IN_A_SLEEP.format(sigint=sigint, wrapper=wrapper, sleep_s=sleep_s))
    assert done.returncode == 0, done.stderr
    return float(done.stdout)


@pytest.mark.timeout(40)
@pytest.mark.parametrize(
    "sigint",
    [
        "signal.default_int_handler",  # Python's own, as a worker usually has it
        "signal.SIG_IGN",  # inherited from a background shell that started Ray
    ],
)
def test_a_cancel_interrupts_a_target_blocked_in_a_sleep(sigint: str) -> None:
    assert _interrupted_after("task._cancel_wakes_the_target()", 20, sigint) < 10


@pytest.mark.timeout(40)
def test_without_it_the_cancel_waits_for_the_sleep_to_end() -> None:
    """What the wrapper is for: with the real SIGINT blocked, Ray's simulated one is
    seen only when the sleep returns."""
    assert _interrupted_after("open('/dev/null')", 1.5, "signal.default_int_handler") >= 1.5


@pytest.mark.timeout(40)
def test_a_target_that_returns_leaves_nothing_behind() -> None:
    script = (
        WORKER.format(sigint="signal.default_int_handler")
        + """
fds = sorted(os.listdir("/proc/self/fd"))
with task._cancel_wakes_the_target():
    result = 42
assert result == 42
assert signal.set_wakeup_fd(-1) == -1, "the wakeup fd is put back"
assert [t.name for t in threading.enumerate()] == ["MainThread"]
assert sorted(os.listdir("/proc/self/fd")) == fds
wake = signal.SIGRTMIN + 1
assert signal.getsignal(wake) == signal.SIG_DFL
print("clean")
"""
    )
    done = _python(script)
    assert done.stdout.strip() == "clean", done.stderr


@pytest.mark.timeout(40)
def test_a_child_the_target_forks_does_not_hold_it_up_or_signal_it() -> None:
    """A forked child inherits the pipe and the wakeup fd: the target must still leave
    at once, and the child's own SIGINT must not reach the parent's watcher (whose wake
    signal, its handler put back, would kill the parent)."""
    script = (
        WORKER.format(sigint="signal.default_int_handler")
        + """
with task._cancel_wakes_the_target():
    child = os.fork()
    if child == 0:
        time.sleep(0.5)
        _thread.interrupt_main()  # a SIGINT of its own, after the parent left the block
        try:
            time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        os._exit(0)
    started = time.monotonic()
left = time.monotonic() - started
time.sleep(1.5)
os.waitpid(child, 0)
print(f"survived, left in {left:.2f} s")
"""
    )
    done = _python(script)
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert done.stdout.startswith("survived, left in 0."), done.stdout
