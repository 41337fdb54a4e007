"""Instance output: every instance's stdout and stderr, read line by line.

Each instance writes its fd 1 and 2 into one pipe (see topo/child.py); the pump
reads all of them in one thread and hands on whole lines, so that two instances'
lines never mix and topo's own stdout stays free for ``--json``.
"""

from __future__ import annotations

import os
import selectors
import threading
from multiprocessing.connection import Connection

from topo.supervise import OutputSink

READ_SIZE = 65536
MAX_LINE = 1 << 20  # a longer line is handed on in pieces of this size


class _Line:
    """The start of a line, in chunks (joining as they come would be quadratic)."""

    __slots__ = ("chunks", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> None:
        cr = data.rfind(b"\r")
        if cr >= 0:  # overwritten on a terminal: only what follows the last \r stays
            self.chunks.clear()
            self.size = 0
            data = data[cr + 1 :]
        if data:
            self.chunks.append(data)
            self.size += len(data)

    def pop(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.size = 0
        return data

    def __len__(self) -> int:
        return self.size


_WATCHES_NEW_DESCRIPTORS: tuple[type, ...] = tuple(
    getattr(selectors, name) for name in ("EpollSelector",) if hasattr(selectors, name)
)


class OutputPump(threading.Thread):
    """Reads every instance's stdout/stderr pipe and hands on whole lines."""

    def __init__(self, sink: OutputSink) -> None:
        super().__init__(name="topo-output", daemon=True)
        self.sink = sink
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.partial: dict[int, _Line] = {}  # the start of each pipe's unfinished line
        self.split: set[str] = set()  # instances told of a split line
        self.closing = threading.Event()
        # Written to wake the thread from select() at once: when a pipe is added, and
        # when the run ends (no polling, so a short run is not kept waiting).
        self.wake_r, self.wake_w = os.pipe()
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)

    def started(self) -> bool:
        return self.ident is not None

    def add(self, name: str, conn: Connection) -> None:
        with self.lock:
            self.selector.register(conn.fileno(), selectors.EVENT_READ, (name, conn))
        # epoll sees a descriptor registered while it waits; select() and poll() do not
        # and must be woken. Waking for nothing cost each start a switch to this thread
        # (~0.3 ms per instance at 256 instances). Not started yet (see
        # LocalLauncher.wait), it sees them all when it starts: a byte per instance
        # would fill the wake pipe, which nothing reads until then.
        if self.started() and not isinstance(self.selector, _WATCHES_NEW_DESCRIPTORS):
            os.write(self.wake_w, b"+")

    def _emit(self, name: str, data: bytes) -> None:
        for raw in data.split(b"\n"):
            raw = raw.rstrip(b"\r")
            raw = raw[raw.rfind(b"\r") + 1 :]  # a terminal shows what the last \r left
            self.sink(name, raw.decode("utf-8", errors="replace"))

    def _read(self, key: selectors.SelectorKey) -> None:
        name, conn = key.data
        try:
            data = os.read(key.fd, READ_SIZE)
        except OSError:
            data = b""
        if not data:
            with self.lock:
                self.selector.unregister(key.fd)
            unfinished = self.partial.pop(key.fd, None)
            if unfinished:
                self._emit(name, unfinished.pop())
            conn.close()
            return
        complete, sep, rest = data.rpartition(b"\n")
        if sep:
            pending = self.partial.pop(key.fd, None)
            self._emit(name, pending.pop() + complete if pending else complete)
        if rest:
            self._keep(key.fd, name, rest)

    def _keep(self, fd: int, name: str, data: bytes) -> None:
        """Hold the start of a line until its end comes, as a terminal would show it:
        what a carriage return overwrites (a progress bar's updates) is dropped, and a
        line longer than MAX_LINE is handed on in pieces, with a note the first time."""
        line = self.partial.setdefault(fd, _Line())
        line.add(data)
        if len(line) > MAX_LINE:
            if name not in self.split:
                self.split.add(name)
                self.sink("", f"{name} printed a line longer than {MAX_LINE:,} bytes: split")
            whole = line.pop()
            for at in range(0, len(whole) - MAX_LINE + 1, MAX_LINE):
                self._emit(name, whole[at : at + MAX_LINE])
            line.add(whole[len(whole) - len(whole) % MAX_LINE :])

    def run(self) -> None:
        while True:
            with self.lock:
                pipes = len(self.selector.get_map()) - 1  # all but the wake pipe
            if not pipes and self.closing.is_set():
                return
            for key, _ in self.selector.select():
                if key.data is None:
                    os.read(self.wake_r, 4096)
                else:
                    self._read(key)

    def finish(self, timeout: float = 2.0) -> None:
        """Read what is left once every instance has exited, then stop (started now if
        it was not: what was printed before is read all the same)."""
        if not self.started():
            self.start()
        self.closing.set()
        os.write(self.wake_w, b".")
        self.join(timeout)
        if not self.is_alive():  # else a grandchild still holds a pipe: leave it be
            self.selector.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
