"""topo.backends.guardian: what topo tells it, and what it does when topo is gone."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from topo.backends.guardian import Guardian


def _switches(pid: int) -> int:
    """How many times process ``pid`` has gone to sleep and been woken."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


@pytest.fixture
def guardian() -> Iterator[Guardian]:
    g = Guardian()
    assert g.pid is not None
    yield g
    g.done()


@pytest.mark.skipif(sys.platform != "linux", reason="/proc")
def test_what_topo_tells_the_guardian_does_not_wake_it(guardian: Guardian) -> None:
    # Each instance's start tells the guardian its process group: waking the guardian
    # for each cost every start a switch to it (~0.1-0.2 ms). It reads what it was told
    # now and then, and at once when topo is gone.
    assert guardian.pid is not None
    time.sleep(0.1)  # let it settle into its wait
    before = _switches(guardian.pid)
    for n in range(100):  # spaced as starts are
        guardian.segment(f"topo-test-none-{n}")
        time.sleep(0.001)
    assert _switches(guardian.pid) - before < 10


def test_the_guardian_reads_more_than_a_pipe_holds_and_acts_at_the_end() -> None:
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)  # its own group
    try:
        g = Guardian()
        assert g.pipe is not None
        holds = fcntl.fcntl(g.pipe, fcntl.F_GETPIPE_SZ)
        for n in range(2 * holds // 26):  # twice what its pipe holds, 26 bytes a line
            g.segment(f"topo-test-none-{n:06}")
        g.group(victim.pid)
        g.close()  # topo gone without "done": the guardian cleans up
        assert victim.wait(timeout=20) == -9
        assert g.pid is not None
        _, status = os.waitpid(g.pid, 0)
        assert status == 0
    finally:
        victim.kill()
        victim.wait()


def test_a_run_that_ends_in_order_leaves_everything_to_its_owners() -> None:
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        g = Guardian()
        g.group(victim.pid)
        g.done()
        time.sleep(0.5)  # two of the guardian's reads: it would have acted by now
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_a_process_forked_from_topo_holds_no_end_of_the_guardians_pipe(
    guardian: Guardian,
) -> None:
    # Else a forked instance (or what it forks) that outlives topo keeps the pipe open,
    # and the guardian never learns that topo is gone.
    assert guardian.pipe is not None
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forked child
        try:
            os.fstat(guardian.pipe)
        except OSError:
            os._exit(0)  # closed, as it should be
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    os.fstat(guardian.pipe)  # topo's own end stays open
