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


class OutputPump(threading.Thread):
    """Reads every instance's stdout/stderr pipe and hands on whole lines."""

    def __init__(self, sink: OutputSink) -> None:
        super().__init__(name="topo-output", daemon=True)
        self.sink = sink
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.partial: dict[int, bytes] = {}
        self.closing = threading.Event()
        # Written to wake the thread from select() at once: when a pipe is added, and
        # when the run ends (no polling, so a short run is not kept waiting).
        self.wake_r, self.wake_w = os.pipe()
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)

    def add(self, name: str, conn: Connection) -> None:
        with self.lock:
            self.selector.register(conn.fileno(), selectors.EVENT_READ, (name, conn))
        os.write(self.wake_w, b"+")

    def _emit(self, name: str, data: bytes) -> None:
        for line in data.decode("utf-8", errors="replace").splitlines():
            self.sink(name, line)

    def _read(self, key: selectors.SelectorKey) -> None:
        name, conn = key.data
        try:
            data = os.read(key.fd, 65536)
        except OSError:
            data = b""
        if not data:
            with self.lock:
                self.selector.unregister(key.fd)
            rest = self.partial.pop(key.fd, b"")
            if rest:
                self._emit(name, rest)
            conn.close()
            return
        data = self.partial.pop(key.fd, b"") + data
        complete, sep, rest = data.rpartition(b"\n")
        if sep:
            self._emit(name, complete)
        if rest:
            self.partial[key.fd] = rest

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
        """Read what is left once every instance has exited, then stop."""
        self.closing.set()
        os.write(self.wake_w, b".")
        self.join(timeout)
        if not self.is_alive():  # else a grandchild still holds a pipe: leave it be
            self.selector.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
