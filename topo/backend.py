"""The small interface every way of carrying out a Plan implements.

The local multiprocessing backend (topo/launch.py) is one; a distributed backend
(Ray) can be another. Nothing outside a backend may assume the primitives are
multiprocessing objects: the backend builds them, hands them to instances, reads
the final state back and returns plain data in a ``RunResult``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from topo.resolve import Plan
from topo.result import RunResult

# Human-facing output: (instance name or "" for topo itself, one line of text).
OutputSink = Callable[[str, str], None]


@dataclass(frozen=True)
class InstanceStatus:
    """One row of the live status table."""

    name: str
    pid: int | None
    state: str  # "running", "blocked in get() on 'tasks'", "exited 0", ...
    restarts: int
    cpu_s: float | None  # CPU time used so far (Linux), None when unknown


StatusSink = Callable[[list[InstanceStatus]], None]
# Run events for the record: (kind, **fields), e.g. ("exit", instance="w[0]", exit_code=0).
EventSink = Callable[..., None]


@dataclass(frozen=True)
class RunOptions:
    run_dir: Path | None = None  # where instance logs go; None: not recorded
    quiet: bool = False  # hide the instances' own output on the terminal
    watch: bool = True  # instrument channels and locks for run-time deadlock detection
    status: StatusSink | None = None  # called about every STATUS_INTERVAL_S while running
    log: OutputSink | None = None  # every line of every instance, even with quiet
    events: EventSink | None = None


class Backend(Protocol):
    name: str

    def run(self, plan: Plan, options: RunOptions, output: OutputSink) -> RunResult:
        """Start every instance, supervise them to the end, and return what happened.

        Never raises for what the instances do (that is in the result);
        ``KeyboardInterrupt`` and SIGTERM end the run with status ``interrupted``.
        """
        ...


def get_backend(name: str = "local") -> Backend:
    if name == "local":
        from topo.launch import LocalBackend

        return LocalBackend()
    raise ValueError(f"unknown backend {name!r}: the only one is 'local'")
