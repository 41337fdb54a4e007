"""What runs in a Ray worker (topo/backends/ray/task.py), without a cluster: the
cancel of a target blocked in a system call, as a Ray worker sees it."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("ray")

# As in a Ray worker: the real SIGINT blocked in the main thread, and ray.cancel
# simulated by _thread.interrupt_main() from another thread while the target sleeps.
CANCELLED_IN_A_SLEEP = """
import _thread, signal, sys, threading, time
from topo.backends.ray.task import _cancel_wakes_the_target

signal.signal(signal.SIGINT, %s)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
threading.Timer(0.3, _thread.interrupt_main).start()
started = time.monotonic()
try:
    with %s:
        time.sleep(%s)
except KeyboardInterrupt:
    print(f"interrupted after {time.monotonic() - started:.1f} s")
    sys.exit(0)
print("slept through the cancel")
"""


def _run(wrapper: str, sleep_s: float, sigint: str) -> subprocess.CompletedProcess[str]:
    script = CANCELLED_IN_A_SLEEP % (sigint, wrapper, sleep_s)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )


@pytest.mark.timeout(40)
@pytest.mark.parametrize(
    "sigint",
    [
        "signal.default_int_handler",  # Python's own, as a worker usually has it
        "signal.SIG_IGN",  # inherited from a background shell that started Ray
    ],
)
def test_a_cancel_interrupts_a_target_blocked_in_a_sleep(sigint: str) -> None:
    done = _run("_cancel_wakes_the_target()", 20, sigint)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("interrupted after 0."), done.stdout


@pytest.mark.timeout(40)
def test_without_it_the_cancel_waits_for_the_sleep_to_end() -> None:
    """What the wrapper is for: with the real SIGINT blocked, Ray's simulated one is
    seen only when the sleep returns."""
    done = _run("open('/dev/null')", 1.5, "signal.default_int_handler")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("interrupted after 1.5"), done.stdout
