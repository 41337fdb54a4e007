"""Queues over a ``SOCK_SEQPACKET`` socket pair: ``multiprocessing``'s queues, faster.

``multiprocessing.Queue`` spends most of an item's time in its own machinery, not in
pickling: a feeder thread woken through a condition, a process-shared lock around every
write and every read, two reads per message (its length, then its bytes). A Unix
``SOCK_SEQPACKET`` socket keeps message boundaries in the kernel, and one ``send`` or
``recv`` moves one whole message atomically, so any number of writers and readers share
it with no lock and no thread: one system call per ``put`` and per ``get``.

What stays exactly as in ``multiprocessing``:

- the classes are subclasses of ``multiprocessing.queues.Queue``, ``JoinableQueue`` and
  ``SimpleQueue`` (``isinstance`` checks keep working), with their methods, arguments,
  exceptions and ``maxsize`` back-pressure (the same bounded semaphore);
- an unbounded ``put`` never blocks: when the socket is full, the item waits in a
  buffer that a feeder thread flushes, and the process flushes it before it exits
  (``cancel_join_thread`` as in multiprocessing); FIFO per writer;
- objects are pickled by ``multiprocessing``'s ``ForkingPickler`` (connections,
  sockets, shared ctypes... travel as they do through ``multiprocessing.Queue``).

What differs, on purpose: the object is pickled in ``put`` itself, not later in a feeder
thread, so an object that cannot be pickled raises in ``put`` (multiprocessing prints a
traceback in its thread and drops it) and a change made to it after ``put`` is never
seen by the reader (with multiprocessing it may be).

Messages above ``INLINE_BYTES`` (the socket's buffer caps a message) travel in a
``memfd``: the writer copies the pickle's out-of-band buffers (numpy arrays, protocol 5)
into it once and passes its descriptor along with the message (``SCM_RIGHTS``); the
reader maps it and unpickles from the mapping, so an array is not copied again. A
descriptor in flight belongs to the socket: nothing to clean up, whoever dies.
"""

from __future__ import annotations

import _multiprocessing
import collections
import contextlib
import fcntl
import io
import mmap
import os
import pickle
import select
import socket
import struct
import threading
import time
from multiprocessing import context as mp_context
from multiprocessing import queues as mp_queues
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.reduction import ForkingPickler
from multiprocessing.util import Finalize, is_exiting, register_after_fork
from queue import Empty, Full
from typing import Any

INLINE_BYTES = 64 * 1024  # a bigger message goes through a memfd
_RECV_BYTES = INLINE_BYTES + 4096  # no message is longer (layout + inline payload)
_FD_SPACE = socket.CMSG_SPACE(struct.calcsize("i"))
_DONTWAIT = socket.MSG_DONTWAIT
_SEM_VALUE_MAX: int = _multiprocessing.SemLock.SEM_VALUE_MAX  # multiprocessing's "unbounded"

# A message is a pickle as it is (its first byte is pickle's PROTO opcode, 0x80), or
# one of these kinds: a layout, then the pickle and its out-of-band buffers.
_BUFFERS = 1  # the pickle and its buffers follow the layout, in the message
_MEMFD = 2  # the pickle and its buffers are in the memfd the message carries
_LAYOUT = struct.Struct("<BIH")  # kind, pickle length, number of buffers ("<Q" sizes follow)
_PLAIN = frozenset({int, float, str, bytes, bool, type(None), complex})  # no buffer, no reducer


class _Pickler(ForkingPickler):
    """ForkingPickler (multiprocessing's reducers) that keeps big buffers apart."""

    def __init__(self, file: io.BytesIO, buffer_callback: Any) -> None:
        # ForkingPickler's own __init__ takes no buffer_callback.
        pickle.Pickler.__init__(
            self, file, pickle.HIGHEST_PROTOCOL, buffer_callback=buffer_callback
        )
        self.dispatch_table = self._copyreg_dispatch_table.copy()  # type: ignore[attr-defined]
        self.dispatch_table.update(self._extra_reducers)  # type: ignore[attr-defined]


def pickled(obj: Any) -> tuple[bytes, list[memoryview]]:
    """``obj`` pickled as multiprocessing pickles it, with its big buffers kept apart
    (numpy arrays and other objects that support pickle protocol 5)."""
    if type(obj) in _PLAIN:  # most messages: nothing for ForkingPickler to do
        return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL), []
    mine = _picklers.__dict__
    if mine.get("busy"):  # a put() from inside a __reduce__: a pickler of its own
        buffers: list[pickle.PickleBuffer] = []
        stream = io.BytesIO()
        _Pickler(stream, buffers.append).dump(obj)
        return stream.getvalue(), [b.raw() for b in buffers]
    if "pickler" not in mine:  # one per thread: building one copies a dispatch table
        mine["stream"] = io.BytesIO()
        mine["buffers"] = []
        mine["pickler"] = _Pickler(mine["stream"], mine["buffers"].append)
    stream, buffers, pickler = mine["stream"], mine["buffers"], mine["pickler"]
    mine["busy"] = True
    try:
        pickler.dump(obj)
        return stream.getvalue(), [b.raw() for b in buffers]
    finally:
        pickler.clear_memo()
        stream.seek(0)
        stream.truncate()
        buffers.clear()
        mine["busy"] = False


_picklers = threading.local()


def _layout(kind: int, head: bytes, views: list[memoryview]) -> bytes:
    sizes = [v.nbytes for v in views]
    return _LAYOUT.pack(kind, len(head), len(views)) + struct.pack(f"<{len(sizes)}Q", *sizes)


def _write_all(fd: int, parts: list[memoryview]) -> None:
    while parts:  # writev may write less than asked
        written = os.writev(fd, parts)
        while parts and written >= parts[0].nbytes:
            written -= parts[0].nbytes
            parts.pop(0)
        if parts and written:
            parts[0] = parts[0][written:]


def decode(data: bytes, fds: list[int]) -> Any:
    """The object of one message, as ``encode`` made it; takes the descriptors."""
    if data[0] == 0x80 and not fds:  # a plain pickle
        return pickle.loads(data)
    try:
        kind, head_size, count = _LAYOUT.unpack_from(data)
        sizes = struct.unpack_from(f"<{count}Q", data, _LAYOUT.size)
        body: Any = memoryview(data)[_LAYOUT.size + 8 * count :]
        if kind == _MEMFD:
            if not fds:
                raise EOFError("a message lost the memory it was sent in")
            total = head_size + sum(sizes)
            body = memoryview(mmap.mmap(fds[0], total)) if total else memoryview(b"")
    finally:
        for fd in fds:
            os.close(fd)
    at = head_size
    buffers: list[Any] = []
    for size in sizes:
        # Each object gets memory of its own, writable as multiprocessing's are: the
        # memfd's mapping (nobody else has it), or a copy out of the message.
        view = body[at : at + size]
        buffers.append(view if kind == _MEMFD else bytearray(view))
        at += size
    return pickle.loads(body[:head_size], buffers=buffers)


def _descriptors(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(struct.unpack(f"{usable // 4}i", payload[:usable]))
    return fds


def _close_fd(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _readable(fd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1000))


def _writable(fd: int) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    poller.poll()


# ----- the wires: how one message goes from a writer to a reader ----------------------------


class SocketWire:
    """Any number of writers and readers: a ``SOCK_SEQPACKET`` socket pair.

    One ``send`` and one ``recv`` per message, each atomic; a message above
    ``INLINE_BYTES`` travels in a memfd passed along with it.
    """

    name = "socket"

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with contextlib.suppress(OSError):  # room for a whole inline message, and more
            self.writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * _RECV_BYTES)
        self.attach()

    def __getstate__(self) -> Any:
        return (self.reader, self.writer)  # sockets travel as multiprocessing passes them

    def __setstate__(self, state: Any) -> None:
        self.reader, self.writer = state
        self.attach()

    def attach(self) -> None:
        self._recvmsg = self.reader.recvmsg

    def pack(self, obj: Any) -> tuple[Any, int | None]:
        """The message (bytes, or parts for sendmsg) and the memfd that goes with it."""
        head, views = pickled(obj)
        if not views and len(head) < INLINE_BYTES:
            return head, None
        if len(head) + sum(v.nbytes for v in views) < INLINE_BYTES:
            return [_layout(_BUFFERS, head, views), head, *views], None
        fd = os.memfd_create("topo-message", os.MFD_CLOEXEC)
        try:
            _write_all(fd, [memoryview(head), *views])
        except BaseException:
            os.close(fd)
            raise
        return [_layout(_MEMFD, head, views)], fd

    def try_send(self, message: Any, fd: int | None) -> bool:
        """Sent at once, or False if the socket is full."""
        try:
            if fd is None and type(message) is bytes:
                self.writer.send(message, _DONTWAIT)
            else:
                self.send(message, fd, wait=False)
        except BlockingIOError:
            return False
        return True

    def send(self, message: Any, fd: int | None, wait: bool) -> None:
        """Raises BlockingIOError when it would wait and ``wait`` is false."""
        flags = 0 if wait else _DONTWAIT
        if fd is not None:
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
            self.writer.sendmsg(message, rights, flags)
            os.close(fd)
        elif type(message) is bytes:
            self.writer.send(message, flags)
        else:
            self.writer.sendmsg(message, (), flags)

    def receive(self, block: bool = True, timeout: float | None = None) -> Any:
        """The next object; queue.Empty when none came in time."""
        if block and timeout is None:
            data, ancdata, _flags, _address = self._recvmsg(_RECV_BYTES, _FD_SPACE)
        else:
            deadline = time.monotonic() + (timeout or 0.0)
            while True:
                try:
                    data, ancdata, _flags, _address = self._recvmsg(
                        _RECV_BYTES, _FD_SPACE, _DONTWAIT
                    )
                    break
                except BlockingIOError:
                    pass  # nothing yet, or another reader took it first
                if not block or not _readable(self.reader.fileno(), deadline - time.monotonic()):
                    raise Empty from None
        if not data:
            raise EOFError("the queue's socket was closed")
        return decode(data, _descriptors(ancdata) if ancdata else [])

    def readable(self) -> bool:
        return _readable(self.reader.fileno(), 0)

    def drain(self, limit: int, deadline: float) -> list[Any]:
        from topo.result import RawItem

        items: list[Any] = []
        while len(items) < limit and time.monotonic() < deadline:
            try:
                data, ancdata, _flags, _address = self.reader.recvmsg(
                    _RECV_BYTES, _FD_SPACE, _DONTWAIT
                )
            except OSError:  # BlockingIOError: nothing left
                break
            try:
                items.append(decode(data, _descriptors(ancdata)))
            except Exception as e:
                items.append(RawItem(bytes(data), f"{type(e).__name__}: {e}"))
        return items

    def close(self) -> None:
        self.reader.close()
        self.writer.close()

    def shared_files(self) -> str | None:
        return None


_FRAME = struct.Struct("!i")  # a message's length before it, as multiprocessing frames
_ATOMIC = select.PIPE_BUF - _FRAME.size  # longest message written at once, whoever writes
_SPAN = struct.Struct("QQ")  # the read buffer's first unread byte and its end
READ_BUFFER = 256 * 1024  # a reader takes up to this much from the pipe at once
_PIPE_BYTES = 256 * 1024  # asked for each pipe: more would eat the per-user pipe budget
# (/proc/sys/fs/pipe-user-pages-soft, 64 MiB by default), past which Linux gives every new
# pipe of the user one page
_F_SETPIPE_SZ = 1031


class PipeWire:
    """One reader: a pipe that its reader reads in batches.

    Writers write each message with one non-blocking ``write`` of at most
    ``PIPE_BUF`` bytes, which POSIX makes atomic: any number of writers, no lock. A
    bigger message goes to a file in /dev/shm, named in the message. The reader reads
    as much as the pipe holds into a buffer in shared memory, where what it has not
    taken yet survives it: a restarted reader goes on from there, and the supervisor
    counts it as undelivered after the run. Only one process may read: a second one
    would take messages the first buffered (checked before the run: T052).
    """

    name = "pipe"

    def __init__(self) -> None:
        from multiprocessing import shared_memory

        read_end, write_end = os.pipe()
        with contextlib.suppress(OSError):  # fewer waits for writers and bigger batches
            fcntl.fcntl(write_end, _F_SETPIPE_SZ, _PIPE_BYTES)
        os.set_blocking(write_end, False)  # writers never wait in write(): they poll()
        self.reader = Connection(read_end, writable=False)
        self.writer = Connection(write_end, readable=False)
        # Made here, freed by close() at the end of the run; instances map it by name.
        self.segment: Any = shared_memory.SharedMemory(create=True, size=_SPAN.size + READ_BUFFER)
        self.segment_name = self.segment.name.lstrip("/")
        self.creator = os.getpid()
        # Files of big messages: /dev/shm/<prefix><pid>-<n>, removed with the run.
        self.prefix = f"topo-{self.segment_name}-"
        self.attach()

    def __getstate__(self) -> Any:
        return (self.reader, self.writer, self.segment_name, self.prefix)

    def __setstate__(self, state: Any) -> None:
        self.reader, self.writer, self.segment_name, self.prefix = state
        self.segment, self.creator = None, 0
        self.attach()

    def attach(self) -> None:
        self.lock = threading.Lock()  # the reader's threads share the buffer
        self.counter = 0
        self.read_fd = self.reader.fileno()
        self.write_fd = self.writer.fileno()
        self.mapped = False  # the read buffer is mapped by the reader only, when it reads

    def _map(self) -> None:
        if self.segment is not None and os.getpid() == self.creator:
            whole: memoryview = self.segment.buf
        else:  # a plain mapping: nothing to close at exit, unlike a SharedMemory
            fd = os.open(f"/dev/shm/{self.segment_name}", os.O_RDWR)
            try:
                whole = memoryview(mmap.mmap(fd, _SPAN.size + READ_BUFFER))
            finally:
                os.close(fd)
        self.span = whole[: _SPAN.size]
        self.buffer = whole[_SPAN.size :]
        self.start, self.end = _SPAN.unpack(self.span)
        self.mapped = True

    def pack(self, obj: Any) -> tuple[bytes, None]:
        """One frame: the pickle, or the name of the file in /dev/shm that holds it."""
        head, views = pickled(obj)
        if not views and len(head) <= _ATOMIC:
            return _FRAME.pack(len(head)) + head, None
        self.counter += 1
        name = f"{self.prefix}{os.getpid()}-{self.counter}"
        fd = os.open(f"/dev/shm/{name}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            _write_all(fd, [memoryview(head), *views])
        except BaseException:
            os.unlink(f"/dev/shm/{name}")
            raise
        finally:
            os.close(fd)
        body = _layout(_MEMFD, head, views) + name.encode()
        return _FRAME.pack(len(body)) + body, None

    def try_send(self, message: bytes, fd: int | None) -> bool:
        """Sent at once (one atomic write), or False if the pipe is full."""
        try:
            os.write(self.write_fd, message)
        except BlockingIOError:
            return False
        return True

    def send(self, message: Any, fd: int | None, wait: bool) -> None:
        while True:
            try:
                os.write(self.write_fd, message)
                return
            except BlockingIOError:
                if not wait:
                    raise
            _writable(self.write_fd)

    def receive(self, block: bool = True, timeout: float | None = None) -> Any:
        with self.lock:
            if self.mapped:  # most calls: a whole plain pickle waits in the buffer
                start, end, buffer = self.start, self.end, self.buffer
                if end - start >= _FRAME.size:
                    at = start + _FRAME.size
                    size = _FRAME.unpack_from(buffer, start)[0]
                    if end - at >= size and buffer[at] == 0x80:
                        self.start = at + size
                        _SPAN.pack_into(self.span, 0, at + size, end)
                        return pickle.loads(buffer[at : at + size])
            else:
                self._map()
            data = self._next(block, timeout)
        return self._decode(data)

    def _next(self, block: bool, timeout: float | None) -> bytes:
        deadline = time.monotonic() + (timeout or 0.0) if timeout else 0.0
        buffer = self.buffer
        while True:
            start, end = self.start, self.end
            if end - start >= _FRAME.size:
                (size,) = _FRAME.unpack_from(buffer, start)
                if end - start - _FRAME.size >= size:
                    at = start + _FRAME.size
                    data = bytes(buffer[at : at + size])
                    self.start = at + size
                    _SPAN.pack_into(self.span, 0, self.start, end)
                    return data
            if start == end:
                start = end = 0
            elif len(buffer) - end < select.PIPE_BUF:  # room for at least one message
                buffer[: end - start] = buffer[start:end]  # never overlaps: start is far on
                start, end = 0, end - start
            self.start, self.end = start, end
            _SPAN.pack_into(self.span, 0, start, end)
            wait = deadline - time.monotonic() if block else 0.0
            if (not block or timeout is not None) and not _readable(self.read_fd, wait):
                raise Empty
            got = os.readv(self.read_fd, [buffer[end:]])
            if not got:
                raise EOFError("the queue's pipe was closed")
            self.end = end + got
            _SPAN.pack_into(self.span, 0, start, self.end)

    def _decode(self, data: bytes) -> Any:
        if data[0] == 0x80:
            return pickle.loads(data)
        count = _LAYOUT.unpack_from(data)[2]
        path = f"/dev/shm/{data[_LAYOUT.size + 8 * count :].decode()}"
        fd = os.open(path, os.O_RDWR)  # mapped writable, as multiprocessing objects are
        os.unlink(path)
        return decode(data, [fd])  # closes fd

    def readable(self) -> bool:
        if not self.mapped:
            self._map()
        return self.start < self.end or _readable(self.read_fd, 0)

    def drain(self, limit: int, deadline: float) -> list[Any]:
        """What the reader buffered and did not take, then what is in the pipe."""
        from topo.backends.local.drain import read_pipe_bytes
        from topo.result import RawItem

        if not self.mapped:
            self._map()
        start, end = _SPAN.unpack(self.span)
        raw = bytes(self.buffer[start:end]) + read_pipe_bytes(self.read_fd, deadline)
        self.start = self.end = 0
        _SPAN.pack_into(self.span, 0, 0, 0)  # taken: a second drain finds nothing
        items: list[Any] = []
        at = 0
        while at + _FRAME.size <= len(raw) and len(items) < limit:
            (size,) = _FRAME.unpack_from(raw, at)
            data = raw[at + _FRAME.size : at + _FRAME.size + size]
            at += _FRAME.size + size
            if size <= 0 or len(data) < size:
                items.append(RawItem(raw[at - _FRAME.size - size :], "a message cut short"))
                break
            try:
                items.append(self._decode(data))
            except Exception as e:
                items.append(RawItem(data, f"{type(e).__name__}: {e}"))
        return items

    def close(self) -> None:
        self.reader.close()
        self.writer.close()
        if self.mapped:
            self.span.release()
            self.buffer.release()
            self.mapped = False
        if self.segment is not None:
            from topo.backends.local.shm import free

            free(self.segment)
            self.segment = None
        for name in os.listdir("/dev/shm") if os.path.isdir("/dev/shm") else ():
            if name.startswith(self.prefix):
                with contextlib.suppress(OSError):
                    os.unlink(f"/dev/shm/{name}")

    def shared_files(self) -> str | None:
        """The /dev/shm names this wire may leave behind, as a prefix ending in ``*``."""
        return self.prefix + "*"


Wire = SocketWire | PipeWire


# ----- the queues: multiprocessing's classes over a wire --------------------------------------


def _packed(queue: Any, obj: Any) -> tuple[Any, int | None]:
    """``obj`` packed for the queue's wire; if it cannot be, the error says where."""
    try:
        return queue._wire.pack(obj)
    except Exception as e:
        # Set by topo in each instance: (instance, parameter, channel).
        instance, param, channel = getattr(queue, "bound_as", None) or ("", "queue", "")
        where = f" through channel '{channel}'" if channel else ""
        e.add_note(
            f"{instance + ': ' if instance else ''}{param}.put() of a {type(obj).__name__} "
            f"could not be sent{where}: it cannot be pickled"
        )
        raise


class _Sender:
    """Sends packed messages without waiting; while the wire is full, they wait in
    order for a feeder thread, and the process sends them before it exits (as a
    ``multiprocessing.Queue``'s feeder does, and ``cancel_join_thread`` as there)."""

    def __init__(self, wire: Wire, on_error: Any) -> None:
        self.wire = wire
        self.on_error = on_error  # called with the exception of a send that failed
        self.waiting: collections.deque[tuple[Any, int | None]] = collections.deque()
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.thread: threading.Thread | None = None
        self.closing = False
        self.join_cancelled = False

    def send(self, message: Any, fd: int | None) -> None:
        # Without the lock while nothing waits: the feeder takes an item off `waiting`
        # only once it is sent, so an empty `waiting` means everything before is sent.
        if not self.waiting and self.wire.try_send(message, fd):
            return
        with self.lock:
            self.waiting.append((message, fd))
            if self.thread is None:
                self._start_feeder()
            self.wake.notify()

    def _start_feeder(self) -> None:
        self.thread = threading.Thread(target=self._feed, name="QueueFeederThread", daemon=True)
        self.thread.start()
        Finalize(self, _Sender.close, [self], exitpriority=10)
        Finalize(self, _Sender.join, [self], exitpriority=-5)

    def _feed(self) -> None:
        while True:
            with self.lock:
                while not self.waiting and not self.closing:
                    self.wake.wait()
                if not self.waiting:
                    return
                message, fd = self.waiting[0]
            try:
                self.wire.send(message, fd, wait=True)  # waits until the reader makes room
            except Exception as e:
                if is_exiting():
                    return
                _close_fd(fd)
                self.on_error(e)
            with self.lock:
                self.waiting.popleft()

    def close(self) -> None:
        with self.lock:
            self.closing = True
            self.wake.notify()

    def join(self) -> None:
        thread = self.thread
        if thread is None or self.join_cancelled or thread is threading.current_thread():
            return
        thread.join()


class _Wired:
    """What the supervisor asks of every queue over a wire."""

    _wire: Wire
    bound_as: tuple[str, str, str] | None = None  # (instance, parameter, channel), in one

    @property
    def transport(self) -> str:
        """``socket`` or ``pipe``."""
        return self._wire.name

    def drain(self, limit: int, deadline: float) -> list[Any]:
        """What is left, read by the supervisor once every instance stopped (no wait)."""
        return self._wire.drain(limit, deadline)

    def free(self) -> None:
        """Close the wire and free what it holds (the supervisor, at the end)."""
        self._wire.close()

    def shared_files(self) -> str | None:
        return self._wire.shared_files()


class Queue(_Wired, mp_queues.Queue):
    """``multiprocessing.Queue`` over a wire (see the module)."""

    def __init__(self, maxsize: int = 0, *, ctx: BaseContext, wire: Wire) -> None:
        self._maxsize = maxsize if maxsize > 0 else _SEM_VALUE_MAX
        self._wire = wire
        self._sem = ctx.BoundedSemaphore(self._maxsize)
        self._opid = os.getpid()
        self._reset()
        register_after_fork(self, Queue._reset)

    def __getstate__(self) -> Any:
        mp_context.assert_spawning(self)
        return (self._maxsize, self._wire, self._sem, self._opid)

    def __setstate__(self, state: Any) -> None:
        self._maxsize, self._wire, self._sem, self._opid = state
        self._reset()

    def _reset(self, after_fork: bool = False) -> None:
        self._ignore_epipe = False
        self._sender = _Sender(self._wire, self._feeder_error)
        self._closed = False

    def __repr__(self) -> str:
        maxsize = 0 if self._maxsize == _SEM_VALUE_MAX else self._maxsize
        return f"<{type(self).__name__} over a {self._wire.name}, maxsize={maxsize}>"

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        message, fd = _packed(self, obj)  # first: what cannot be pickled changes nothing
        if not self._sem.acquire(block, timeout):
            _close_fd(fd)
            raise Full
        self._sender.send(message, fd)

    def _feeder_error(self, error: BaseException) -> None:
        self._sem.release()  # as multiprocessing: the item was never in the queue
        self._on_queue_feeder_error(error, None)  # type: ignore[attr-defined]

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        obj = self._wire.receive(block, timeout)
        self._sem.release()
        return obj

    def qsize(self) -> int:
        return int(self._maxsize - self._sem._semlock._get_value())  # type: ignore[attr-defined]

    def empty(self) -> bool:
        return not self._wire.readable()

    def full(self) -> bool:
        return bool(self._sem._semlock._is_zero())  # type: ignore[attr-defined]

    def get_nowait(self) -> Any:
        return self.get(False)

    def put_nowait(self, obj: Any) -> None:
        return self.put(obj, False)

    def close(self) -> None:
        self._closed = True
        self._sender.close()

    def join_thread(self) -> None:
        assert self._closed, f"Queue {self!r} not closed"
        self._sender.join()

    def cancel_join_thread(self) -> None:
        self._sender.join_cancelled = True


class JoinableQueue(Queue, mp_queues.JoinableQueue):
    """``multiprocessing.JoinableQueue`` over a wire: ``task_done`` and ``join`` count
    with the same semaphore and condition as multiprocessing's."""

    def __init__(self, maxsize: int = 0, *, ctx: BaseContext, wire: Wire) -> None:
        Queue.__init__(self, maxsize, ctx=ctx, wire=wire)
        self._unfinished_tasks = ctx.Semaphore(0)
        self._cond = ctx.Condition()

    def __getstate__(self) -> Any:
        return (*Queue.__getstate__(self), self._cond, self._unfinished_tasks)

    def __setstate__(self, state: Any) -> None:
        Queue.__setstate__(self, state[:-2])
        self._cond, self._unfinished_tasks = state[-2:]

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        message, fd = _packed(self, obj)
        if not self._sem.acquire(block, timeout):
            _close_fd(fd)
            raise Full
        with self._cond:  # counted before a reader can take it, as in multiprocessing
            self._unfinished_tasks.release()
            self._sender.send(message, fd)

    task_done = mp_queues.JoinableQueue.task_done
    join = mp_queues.JoinableQueue.join


class SimpleQueue(_Wired, mp_queues.SimpleQueue):
    """``multiprocessing.SimpleQueue`` over a wire: ``put`` waits while the wire is
    full, as a SimpleQueue's waits while its pipe is."""

    def __init__(self, *, ctx: BaseContext, wire: Wire) -> None:
        self._wire = wire

    def __getstate__(self) -> Any:
        mp_context.assert_spawning(self)
        return self._wire

    def __setstate__(self, state: Any) -> None:
        self._wire = state

    def __repr__(self) -> str:
        return f"<{type(self).__name__} over a {self._wire.name}>"

    def close(self) -> None:
        self._wire.close()

    def empty(self) -> bool:
        return not self._wire.readable()

    def get(self) -> Any:
        return self._wire.receive()

    def put(self, obj: Any) -> None:
        message, fd = _packed(self, obj)
        try:
            self._wire.send(message, fd, wait=True)
        except BaseException:
            _close_fd(fd)
            raise


WIRES: dict[str, type[SocketWire] | type[PipeWire]] = {"socket": SocketWire, "pipe": PipeWire}


def build(kind: str, transport: str, maxsize: int, ctx: BaseContext) -> Any:
    """A queue of ``kind`` (queue, joinable_queue, simple_queue) over ``transport``."""
    wire = WIRES[transport]()
    if kind == "simple_queue":
        return SimpleQueue(ctx=ctx, wire=wire)
    cls = JoinableQueue if kind == "joinable_queue" else Queue
    return cls(maxsize, ctx=ctx, wire=wire)
