"""The guardian: a small process that outlives a killed topo and cleans up after it.

``kill -9`` of topo (or of its whole process group, as ``docker kill`` does) leaves no
chance to clean up: instances die with topo (a parent-death signal under fork, a pidfd
watch under spawn and forkserver), but what they started lives on in their process
groups, shared memory stays in /dev/shm (the resource tracker is killed too), and the
run's record says ``running`` for ever. The guardian is forked from topo when a run
opens, before anything else, and moves to a session of its own; it learns through a pipe
what to clean (``group PGID``, ``segment NAME``, ``record RUN_DIR``, ``process PID
START``, ``marked TOKEN``) and, if the pipe reaches EOF before ``done``, topo is gone:
it kills the groups, the processes it was told of (if still the same: their start time)
and every process whose environment carries the mark (``TOPO_GUARDIAN_MARK=TOKEN``):
that is how the Ray backend has the processes of a local Ray it started stopped, the
workers it starts later included. It unlinks the segments and marks the record
``killed``. A fork, not a new interpreter: it costs about a millisecond. Shared by the
backends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
from pathlib import Path

MARK = "TOPO_GUARDIAN_MARK"
DRAIN_S = 0.1  # how often the guardian reads what topo told it
PIPE_BYTES = 1 << 20  # its pipe: ~80,000 announcements, so topo never waits for a read


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> list[tuple[int, int]]:
    """(pid, start time) of every live descendant of ``root``."""
    parents: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                parents.setdefault(stat[0], []).append((int(entry), stat[1]))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), ()):
            found.append(child)
            todo.append(child[0])
    return found


def _marked(marks: list[bytes]) -> list[int]:  # pragma: no cover - in the guardian
    """Processes whose environment holds one of ``marks`` (``NAME=token``)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if any(mark in env for mark in marks):
                found.append(int(entry))
    return found


# The write ends of this process's guardian pipes. A process forked from topo (an
# instance or the manager under fork, and what they fork) must not keep one open: the
# guardian learns of topo's death from the end of that pipe, which would never come.
_WRITE_ENDS: set[int] = set()


def _close_write_ends() -> None:
    for fd in _WRITE_ENDS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _WRITE_ENDS.clear()


os.register_at_fork(after_in_child=_close_write_ends)


class Guardian:
    """topo's side: forks the guardian and tells it what the run allocates."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.pipe: int | None = None
        try:
            read, write = os.pipe()
            pid = os.fork()
        except OSError:  # no guardian: a run that ends in order cleans up by itself
            return
        if pid == 0:  # pragma: no cover - the guardian itself (tested end to end)
            try:
                os.close(write)
                _guard(read)
            finally:
                os._exit(0)
        os.close(read)
        with contextlib.suppress(OSError):  # room for what topo says between two reads
            fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self.pid, self.pipe = pid, write
        _WRITE_ENDS.add(write)

    def _say(self, line: str) -> None:
        if self.pipe is not None:
            try:
                os.write(self.pipe, line.encode("utf-8", "surrogateescape") + b"\n")
            except OSError:
                self.close()

    def group(self, pgid: int) -> None:
        self._say(f"group {pgid}")

    def segment(self, name: str) -> None:
        self._say(f"segment {name}")

    def record(self, run_dir: Path) -> None:
        self._say(f"record {run_dir}")

    def process(self, pid: int, started: int) -> None:
        """Kill process ``pid`` if it is still the one started at ``started`` (ticks)."""
        self._say(f"process {pid} {started}")

    def marked(self, token: str) -> None:
        """Kill the processes whose environment has ``TOPO_GUARDIAN_MARK=token``."""
        self._say(f"marked {token}")

    def done(self) -> None:
        """The run ended in order: the guardian has nothing to do, and is stopped. It
        is told "done" first, so that the end of the pipe cannot pass for topo's death;
        it is not waited for to read it, since it reads only now and then."""
        self._say("done")
        if self.pid is not None:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        self.close()
        if self.pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = None

    def close(self) -> None:
        if self.pipe is not None:
            _WRITE_ENDS.discard(self.pipe)
            with contextlib.suppress(OSError):
                os.close(self.pipe)
            self.pipe = None


def _expanded(segments: list[str]) -> list[str]:
    """Names in /dev/shm; ``prefix*`` stands for every name that starts with prefix
    (a queue's files of big messages, named by the instances as they go)."""
    prefixes = tuple(name[:-1] for name in segments if name.endswith("*") and len(name) > 8)
    names = [name for name in segments if not name.endswith("*")]
    if prefixes:
        with contextlib.suppress(OSError):
            names += [name for name in os.listdir("/dev/shm") if name.startswith(prefixes)]
    return names


def _guard(pipe: int) -> None:  # pragma: no cover - runs in the forked guardian
    """Wait for topo's end; clean up if it comes without "done"."""
    os.setsid()  # out of topo's process group and session: a kill of those spares it
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # hold none of topo's terminal or pipes
        os.dup2(null, fd)
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else ():
        if int(name) > 2 and int(name) != pipe:
            with contextlib.suppress(OSError):
                os.close(int(name))
    # Asleep until topo closes the pipe (POLLHUP, which poll reports unasked): a write
    # does not wake it, so each instance's start does not cost topo a switch to the
    # guardian. It reads what it was told every DRAIN_S, so that the pipe never fills.
    poller = select.poll()
    poller.register(pipe, 0)
    os.set_blocking(pipe, False)
    data = b""
    ended = False
    while not ended:
        with contextlib.suppress(InterruptedError):
            poller.poll(DRAIN_S * 1000)
        while True:
            try:
                chunk = os.read(pipe, 65536)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if not chunk:  # topo's end of the pipe is closed: topo is gone or done
                ended = True
                break
            data += chunk
        if data.endswith(b"done\n"):  # the last word topo says, if it ends in order
            return
    groups: list[int] = []
    segments: list[str] = []
    records: list[str] = []
    marks: list[bytes] = []
    processes: list[tuple[int, int]] = []
    for raw in data.decode("utf-8", "surrogateescape").splitlines():
        kind, _, value = raw.partition(" ")
        if kind == "done":
            return
        if kind == "group" and value.isdigit():
            groups.append(int(value))
        elif kind == "segment" and value and "/" not in value:
            segments.append(value)
        elif kind == "record":
            records.append(value)
        elif kind == "process" and value.replace(" ", "").isdigit():
            number, _, since = value.partition(" ")
            processes.append((int(number), int(since or 0)))
        elif kind == "marked" and value:
            marks.append(f"{MARK}={value}".encode())
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
    for known, started in processes:  # the one it was, not another that took its pid
        stat = _stat(known)
        if stat is not None and stat[1] == started:
            with contextlib.suppress(OSError):
                os.kill(known, signal.SIGKILL)
    for _ in range(3) if marks else ():  # what they start meanwhile, in turn
        for found in _marked(marks):
            with contextlib.suppress(OSError):
                os.kill(found, signal.SIGKILL)
    for name in _expanded(segments):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join("/dev/shm", name))
    for run_dir in records:
        with contextlib.suppress(Exception):
            from topo.record import RunFolder

            RunFolder(run_dir).mark_killed()
