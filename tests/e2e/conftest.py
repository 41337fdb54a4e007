"""Helpers for the end-to-end tests: run the real ``topo`` CLI on real processes.

Each run starts in a session of its own, so every process it starts (instances,
manager, resource tracker, forkserver) can be found afterwards through /proc; a test
fails if any of them outlives the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

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

    def ok(self) -> dict[str, Any]:
        """Assert the run exited 0 and printed one JSON document saying so; return it."""
        assert self.doc is not None, f"stdout is not one JSON document\n{self}"
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


def _leftovers(sessions: list[int]) -> list[tuple[int, int, int, str]]:
    me = os.getpid()
    return [p for p in _live_processes() if p[2] in sessions or p[1] == me]


def _kill(processes: list[tuple[int, int, int, str]]) -> None:
    for pid, *_ in processes:
        with contextlib.suppress(OSError):  # already gone
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def run_topo() -> Iterator[Callable[..., TopoRun]]:
    """``run_topo(*args)`` runs ``python -m topo *args`` and returns a ``TopoRun``.

    After the test, it fails the test if a process started by any of those runs, or
    any child of the test process, is still alive (and kills it).
    """
    sessions: list[int] = []

    def run(*args: str, timeout: float = RUN_TIMEOUT_S) -> TopoRun:
        env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "topo", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its session id is its pid: how we find what it started
        )
        sessions.append(proc.pid)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(_leftovers([proc.pid]))
            stdout, stderr = proc.communicate()
            pytest.fail(f"topo {' '.join(args)} still running after {timeout} s\n{stderr}")
        try:
            doc = json.loads(stdout)
        except ValueError:
            doc = None
        return TopoRun(tuple(args), proc.returncode, stdout, stderr, doc)

    yield run

    deadline = time.monotonic() + EXIT_GRACE_S
    while (left := _leftovers(sessions)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        _kill(left)
        pytest.fail(f"processes outlived their topo run: {left}")
