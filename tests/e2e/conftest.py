"""Helpers for the end-to-end tests: run the real ``topo`` CLI on real processes.

Each run starts in a session of its own, so every process it starts (instances,
manager, resource tracker, forkserver) can be found afterwards through /proc; a test
fails if any of them outlives the run.

``run_topo`` runs one command to its end; ``start_topo`` starts one and hands back a
``LiveTopo``, to watch its stderr as it comes (``wait_for``) and to send it signals
while its instances run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

# What a topo run that ended by itself never prints: the resource tracker's warnings
# (something left in /dev/shm, or cleaned up twice), an exception in a finalizer (a
# semaphore unlinked twice), a semaphore an instance could not open (unlinked too early).
TEARDOWN_NOISE = ("resource_tracker:", "Exception ignored in", "FileNotFoundError")

INSTANCE_LINE = re.compile(r"^[A-Za-z_]\w*(\[\d+\])? \| ")  # what an instance printed
RUN_TIMEOUT_S = 45.0  # below the tests' 60 s pytest-timeout, so a hang fails with a clear message
EXIT_GRACE_S = 5.0  # helpers such as the resource tracker exit just after topo does


@dataclass
class TopoRun:
    """One finished ``python -m topo ...``; ``doc`` is stdout parsed as JSON, or None."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    doc: Any
    session: int = 0  # topo's pid, which is also the id of the session it runs in
    started_at: float = 0.0  # time.monotonic() when topo was started...
    ended_at: float = 0.0  # ...and when it exited

    @property
    def elapsed_s(self) -> float:
        """Wall time from starting topo to its exit."""
        return self.ended_at - self.started_at

    def instance_pids(self) -> list[int]:
        """The pid of every instance the JSON document names (the last one, if restarted)."""
        if self.doc is None:
            return []
        return [r["pid"] for r in self.doc.get("processes", {}).values() if r.get("pid")]

    def instances_alive(self) -> list[int]:
        """The instance pids of the JSON document still alive now (topo joins each
        instance before it exits, so: none)."""
        pids = self.instance_pids()
        return [pid for pid, *_ in _live_processes() if pid in pids]

    def survivors(self, within: float = EXIT_GRACE_S) -> list[tuple[int, int, int, str]]:
        """What this run started that is still alive after waiting up to ``within`` s:
        any process of its session, and any instance pid from its JSON document."""
        return wait_gone([self.session], self.instance_pids(), within)

    def teardown_noise(self) -> list[str]:
        """The lines of stderr that say a semaphore or segment was lost or freed twice.
        Not CPython's complaint about a target's own Pool left unclosed at its exit
        (``Pool.__del__``: its notifier closed before the collector ran), which is the
        target's."""
        return [
            line
            for line in self.stderr.splitlines()
            if any(n in line for n in TEARDOWN_NOISE)
            and not (INSTANCE_LINE.match(line) and "Pool.__del__" in line)
        ]

    def ok(self) -> dict[str, Any]:
        """Assert the run exited 0, printed one JSON document saying so and left its
        semaphores and segments in order; return the document."""
        assert self.doc is not None, f"stdout is not one JSON document\n{self}"
        assert self.teardown_noise() == [], str(self)
        assert self.returncode == 0, str(self)
        assert self.doc["status"] == "ok", str(self)
        assert self.doc["exit_code"] == 0, str(self)
        for instance, record in self.doc["processes"].items():
            assert record["exit_code"] == 0, f"{instance}: {record}\n{self}"
            assert record["restarts"] == 0, f"{instance}: {record}\n{self}"
        return dict(self.doc)

    def __str__(self) -> str:
        return (
            f"topo {' '.join(self.args)} exited {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


def _live_processes() -> Iterator[tuple[int, int, int, str]]:
    """(pid, ppid, session id, command) of every process on the machine except zombies."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
        except OSError:  # exited meanwhile
            continue
        command = text[text.index("(") + 1 : text.rindex(")")]
        state, ppid, _pgrp, session = text[text.rindex(")") + 2 :].split()[:4]
        if state not in "ZX":
            yield int(entry), int(ppid), int(session), command


def _leftovers(
    sessions: list[int], earlier: frozenset[int] | set[int] = frozenset()
) -> list[tuple[int, int, int, str]]:
    me = os.getpid()
    return [
        p for p in _live_processes() if p[2] in sessions or (p[1] == me and p[0] not in earlier)
    ]


def wait_gone(
    sessions: list[int], pids: list[int], within: float
) -> list[tuple[int, int, int, str]]:
    """Wait up to ``within`` s for every process of ``sessions`` and every one of ``pids``
    to be gone (zombies count as gone); return those still alive then."""
    deadline = time.monotonic() + within
    while True:
        alive = [p for p in _live_processes() if p[2] in sessions or p[0] in pids]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def marked_record(record: Path, within: float) -> dict[str, Any]:
    """The run record ``record`` once no longer ``running``: after a kill -9 of topo, its
    guardian marks it ``killed`` when it has stopped what the run left (a moment later)."""
    deadline = time.monotonic() + within
    while (doc := json.loads(record.read_text()))["status"] == "running":
        assert time.monotonic() < deadline, "the record still says running"
        time.sleep(0.05)
    found: dict[str, Any] = doc
    return found


def _kill(processes: list[tuple[int, int, int, str]]) -> None:
    for pid, *_ in processes:
        with contextlib.suppress(OSError):  # already gone
            os.kill(pid, signal.SIGKILL)


WAIT_S = 20.0  # longest wait for a line on stderr


class LiveTopo:
    """A ``python -m topo ...`` started in a session of its own, still running.

    Two threads read its stdout and stderr as they come, a third waits for its exit,
    so that a test can wait for a line a target prints before it sends a signal.
    """

    def __init__(self, args: tuple[str, ...]) -> None:
        self.args = args
        env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "topo", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its session id is its pid: how we find what it started
        )
        self.pid = self.proc.pid
        self.ended_at: float | None = None
        self.changed = threading.Condition()
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        self.waiter = threading.Thread(target=self._wait, daemon=True)
        for thread in (*self.readers, self.waiter):
            thread.start()

    def _read(self, stream: Any, into: list[str]) -> None:
        # Lines, as they come; EOF only once every process holding the pipe is gone.
        for line in stream:
            with self.changed:
                into.append(line)
                self.changed.notify_all()
        stream.close()

    def _wait(self) -> None:
        self.proc.wait()
        with self.changed:
            self.ended_at = time.monotonic()
            self.changed.notify_all()

    @property
    def stderr(self) -> str:
        with self.changed:
            return "".join(self.err)

    def wait_for(self, text: str, count: int = 1, timeout: float = WAIT_S) -> None:
        """Wait until ``text`` has appeared ``count`` times on stderr; fail the test if
        topo exits first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while "".join(self.err).count(text) < count:
                left = deadline - time.monotonic()
                if self.ended_at is not None or left <= 0:
                    why = (
                        "exited"
                        if self.ended_at is not None
                        else f"still running after {timeout} s"
                    )
                    pytest.fail(
                        f"topo {' '.join(self.args)} {why} before {count} x {text!r} on stderr\n"
                        + "".join(self.err)
                    )
                self.changed.wait(min(left, 0.5))

    def signal(self, signum: int, group: bool = False) -> float:
        """Send ``signum`` to topo, or to its whole process group (as a terminal's
        Ctrl-C does); return when it was sent (time.monotonic())."""
        if group:
            os.killpg(self.pid, signum)
        else:
            os.kill(self.pid, signum)
        return time.monotonic()

    def survivors(self, pids: list[int], within: float) -> list[tuple[int, int, int, str]]:
        """Those of ``pids``, or of topo's session, still alive after up to ``within`` s."""
        return wait_gone([self.pid], pids, within)

    def processes(self) -> list[tuple[int, int, int, str]]:
        """(pid, ppid, session, command) of every live process of its session but topo."""
        return [p for p in _leftovers([self.pid]) if p[2] == self.pid and p[0] != self.pid]

    def finish(self, timeout: float = RUN_TIMEOUT_S) -> TopoRun:
        """Wait for topo to exit and return the finished run (fail the test past
        ``timeout`` s since it started)."""
        left = self.started_at + timeout - time.monotonic()
        self.waiter.join(max(0.0, left))
        if self.waiter.is_alive():
            _kill(_leftovers([self.pid]))
            self.waiter.join()
            pytest.fail(
                f"topo {' '.join(self.args)} still running after {timeout} s\n{self.stderr}"
            )
        for reader in self.readers:  # the rest of the output, once helpers let go of the pipes
            reader.join(EXIT_GRACE_S)
        with self.changed:
            stdout, stderr = "".join(self.out), "".join(self.err)
        try:
            doc = json.loads(stdout)
        except ValueError:
            doc = None
        assert self.ended_at is not None
        return TopoRun(
            self.args,
            self.proc.returncode,
            stdout,
            stderr,
            doc,
            session=self.pid,
            started_at=self.started_at,
            ended_at=self.ended_at,
        )


@contextlib.contextmanager
def _no_leftovers(sessions: list[int]) -> Iterator[None]:
    """After the test, fail it if a process of ``sessions``, or any child the test
    process started meanwhile, is still alive (and kill it). Children from before the
    test (the resource tracker of a unit test run earlier) are not the test's."""
    me = os.getpid()
    earlier = {p[0] for p in _live_processes() if p[1] == me}
    yield
    deadline = time.monotonic() + EXIT_GRACE_S
    while (left := _leftovers(sessions, earlier)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        _kill(left)
        pytest.fail(f"processes outlived their topo run: {left}")


@pytest.fixture
def run_topo() -> Iterator[Callable[..., TopoRun]]:
    """``run_topo(*args)`` runs ``python -m topo *args`` and returns a ``TopoRun``.

    After the test, it fails the test if a process started by any of those runs, or
    any child of the test process, is still alive (and kills it).
    """
    sessions: list[int] = []

    def run(*args: str, timeout: float = RUN_TIMEOUT_S) -> TopoRun:
        live = LiveTopo(args)
        sessions.append(live.pid)
        return live.finish(timeout)

    with _no_leftovers(sessions):
        yield run


@pytest.fixture
def start_topo() -> Iterator[Callable[..., LiveTopo]]:
    """``start_topo(*args)`` starts ``python -m topo *args`` and returns a ``LiveTopo``;
    the same check as ``run_topo`` after the test (and a topo still running is killed)."""
    sessions: list[int] = []

    def start(*args: str) -> LiveTopo:
        live = LiveTopo(args)
        sessions.append(live.pid)
        return live

    with _no_leftovers(sessions):
        yield start
