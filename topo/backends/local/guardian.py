"""The guardian: a small process that outlives a killed topo and cleans up after it.

``kill -9`` of topo (or of its whole process group, as ``docker kill`` does) leaves no
chance to clean up: instances die with topo (a parent-death signal, or a pidfd watch
under forkserver), but what they started lives on in their process groups, shared
memory stays in /dev/shm (the resource tracker is killed too), and the run's record
says ``running`` for ever. The guardian runs in a session of its own, learns from
topo through its stdin what to clean (``group PGID``, ``segment NAME``, ``record
RUN_DIR``) and, if its stdin reaches EOF before ``done``, topo is gone: it kills the
groups, unlinks the segments and marks the record ``killed``.

Run as ``python -m topo.backends.local.guardian``; ``Guardian`` is topo's side.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO


class Guardian:
    """topo's side: starts the guardian and tells it what the run allocates."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.pipe: IO[bytes] | None = None
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "topo.backends.local.guardian"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # survives a kill of topo's process group
                close_fds=True,
            )
            self.pipe = self.process.stdin
        except OSError:  # no guardian: a normal ending still cleans up by itself
            self.process = None

    def _say(self, line: str) -> None:
        if self.pipe is not None:
            try:
                self.pipe.write(line.encode("utf-8", "surrogateescape") + b"\n")
                self.pipe.flush()
            except OSError:
                self.pipe = None

    def group(self, pgid: int) -> None:
        self._say(f"group {pgid}")

    def segment(self, name: str) -> None:
        self._say(f"segment {name}")

    def record(self, run_dir: Path) -> None:
        self._say(f"record {run_dir}")

    def done(self) -> None:
        """The run ended in order: the guardian has nothing to do and exits."""
        self._say("done")
        if self.pipe is not None:
            with contextlib.suppress(OSError):
                self.pipe.close()
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=1.0)


def _clean(groups: list[int], segments: list[str], records: list[str]) -> None:
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
    for name in segments:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join("/dev/shm", name))
    for run_dir in records:
        with contextlib.suppress(Exception):
            from topo.record import RunFolder

            RunFolder(run_dir).mark_killed()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is topo's to handle
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    groups: list[int] = []
    segments: list[str] = []
    records: list[str] = []
    for raw in sys.stdin.buffer:
        kind, _, value = raw.decode("utf-8", "surrogateescape").rstrip("\n").partition(" ")
        if kind == "done":
            return
        if kind == "group":
            groups.append(int(value))
        elif kind == "segment" and "/" not in value:
            segments.append(value)
        elif kind == "record":
            records.append(value)
    _clean(groups, segments, records)  # EOF before "done": topo is gone


if __name__ == "__main__":
    main()
