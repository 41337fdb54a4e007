"""What was still in the channels once every instance had stopped: read, never waited for.

Every reader here is bounded in items and time and takes no lock: an instance killed
while it held a queue's lock must not hang the end of the run. Queue and pipe
messages are read from the pipe's descriptor without blocking and split by
multiprocessing's own framing (a 4-byte length, or -1 and an 8-byte length), so a
message a killed writer left half-written is kept as bytes instead of being waited
for. What cannot be unpickled is kept as a ``RawItem``.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import time
from collections.abc import Iterator
from typing import Any

from topo.result import RawItem

MAX_ITEMS = 100_000  # per channel
MAX_SECONDS = 2.0  # for the whole run

_SIZE = struct.Struct("!i")
_LARGE = struct.Struct("!Q")


def _unpickled(data: bytes) -> Any:
    try:
        return pickle.loads(data)
    except Exception as e:
        return RawItem(data, f"{type(e).__name__}: {e}")


def _frames(raw: bytes) -> Iterator[Any]:
    """The messages in ``raw``, unpickled; a truncated last one as a RawItem."""
    at = 0
    while at < len(raw):
        if len(raw) - at < _SIZE.size:
            yield RawItem(raw[at:], "a message cut short (its writer was stopped)")
            return
        (size,) = _SIZE.unpack_from(raw, at)
        at += _SIZE.size
        if size == -1:
            if len(raw) - at < _LARGE.size:
                yield RawItem(raw[at - _SIZE.size :], "a message cut short")
                return
            (size,) = _LARGE.unpack_from(raw, at)
            at += _LARGE.size
        if size < 0:  # not a header: a reader was stopped half-way through a message
            yield RawItem(raw[at - _SIZE.size :], "the rest of a message a reader had begun")
            return
        if len(raw) - at < size:
            yield RawItem(raw[at:], "a message cut short (its writer was stopped)")
            return
        yield _unpickled(raw[at : at + size])
        at += size


def read_pipe_bytes(fd: int, deadline: float) -> bytes:
    """Every byte waiting in the pipe or socket ``fd`` (its receiving end), unwaited."""
    chunks: list[bytes] = []
    was_blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 1 << 20)
            except OSError:  # BlockingIOError: nothing more
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        with contextlib.suppress(OSError):
            os.set_blocking(fd, was_blocking)
    return b"".join(chunks)


def read_pipe(fd: int, deadline: float, limit: int = MAX_ITEMS) -> list[Any]:
    """Every message waiting in the pipe or socket ``fd`` (the receiving end)."""
    items: list[Any] = []
    for item in _frames(read_pipe_bytes(fd, deadline)):
        if len(items) >= limit:
            break
        items.append(item)
    return items


def read_manager_queue(proxy: Any, deadline: float, limit: int = MAX_ITEMS) -> list[Any]:
    """What a manager's queue still holds (the manager outlives the instances)."""
    from queue import Empty

    items: list[Any] = []
    while len(items) < limit and time.monotonic() < deadline:
        try:
            items.append(proxy.get_nowait())
        except Empty:
            break
        except Exception as e:  # an item the manager cannot send back
            items.append(RawItem(b"", f"{type(e).__name__}: {e}"))
            break
    return items
