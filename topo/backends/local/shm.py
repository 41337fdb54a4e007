"""Shared-memory channels for big payloads: ``ndarray`` and ``queue`` with ``transport: shm``.

``multiprocessing.Queue`` pickles every message and pushes it through a pipe; for
megabyte arrays that costs far more than copying the bytes once through shared
memory. Both kinds here live in ``multiprocessing.shared_memory`` segments created
by the supervisor, which also unlinks them at the end of the run, whatever happens.

numpy is needed only when a spec uses these kinds (``pip install topo[numpy]`` for
``ndarray``; the shm queue moves bytes without it).
"""

from __future__ import annotations

import contextlib
import pickle
import struct
from multiprocessing import shared_memory
from multiprocessing.context import BaseContext
from queue import Empty, Full
from typing import Any

# A process keeps the segments it attached for as long as it lives: a numpy view
# into a closed segment would crash the interpreter.
_attached: list[shared_memory.SharedMemory] = []


def _attach(name: str) -> shared_memory.SharedMemory:
    shm = shared_memory.SharedMemory(name=name)
    _attached.append(shm)
    return shm


# ----- ndarray ----------------------------------------------------------------------------


class SharedArray:
    """A numpy array in a shared-memory segment; pickles as its name, shape and dtype.

    Targets never see this object: the instance turns it into the numpy view itself
    (``attach``) before calling its target.
    """

    def __init__(self, name: str, shape: tuple[int, ...], dtype: str) -> None:
        self.name, self.shape, self.dtype = name, shape, dtype

    @classmethod
    def create(cls, shape: tuple[int, ...], dtype: str, fill: Any) -> tuple[SharedArray, Any]:
        import numpy as np

        nbytes = max(int(np.prod(shape)) * np.dtype(dtype).itemsize, 1)
        shm = shared_memory.SharedMemory(create=True, size=nbytes)
        array = np.ndarray(shape, dtype=dtype, buffer=shm.buf)
        array[...] = fill
        return cls(shm.name, shape, dtype), shm

    def attach(self) -> Any:
        """The zero-copy numpy view of the segment, in this process."""
        import numpy as np

        return np.ndarray(self.shape, dtype=self.dtype, buffer=_attach(self.name).buf)

    def __reduce__(self) -> Any:
        return (SharedArray, (self.name, self.shape, self.dtype))


# ----- the shared-memory queue --------------------------------------------------------------

# Each slot starts with a header: payload length (Q), kind (B), and for arrays the
# dtype and shape as a short pickled tuple whose length is the second Q.
_HEADER = struct.Struct("QBQ")
_BYTES, _PICKLE, _ARRAY = 0, 1, 2


class ShmQueue:
    """A bounded multi-producer, multi-consumer queue of ``slots`` fixed-size slots.

    ``put`` copies bytes, bytearrays, memoryviews and numpy arrays into the next free
    slot as they are (other objects are pickled); ``get`` copies them out again, so a
    slot is free as soon as ``get`` returns. Same ``put``/``get`` signature as
    ``multiprocessing.Queue``; a payload larger than ``slot_size`` is a ValueError.
    """

    def __init__(self, ctx: BaseContext, slots: int, slot_size: int) -> None:
        self.slots, self.slot_size = slots, slot_size
        self.stride = _HEADER.size + slot_size
        shm = shared_memory.SharedMemory(create=True, size=16 + slots * self.stride)
        # The head and tail counters start at 0: a new segment is zero-filled.
        self._shm: shared_memory.SharedMemory | None = shm
        self.name = shm.name
        self.free = ctx.Semaphore(slots)
        self.filled = ctx.Semaphore(0)
        self.put_lock = ctx.Lock()
        self.get_lock = ctx.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_shm"] = None
        return state

    @property
    def buf(self) -> memoryview:
        if self._shm is None:
            self._shm = _attach(self.name)
        return self._shm.buf  # type: ignore[return-value]  # None only once closed

    def _counter(self, at: int, buf: memoryview) -> int:
        value: int = struct.unpack_from("Q", buf, at)[0]
        struct.pack_into("Q", buf, at, value + 1)
        return value

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        kind, meta, payload = _encode(obj)
        size = len(meta) + payload.nbytes
        if size > self.slot_size:
            raise ValueError(
                f"a message of {size} bytes does not fit a slot of "
                f"{self.slot_size} bytes: raise slot_size in the spec"
            )
        if not self.free.acquire(block, timeout):
            raise Full
        buf = self.buf
        with self.put_lock:
            slot = self._counter(8, buf) % self.slots
            at = 16 + slot * self.stride
            _HEADER.pack_into(buf, at, payload.nbytes, kind, len(meta))
            at += _HEADER.size
            buf[at : at + len(meta)] = meta
            at += len(meta)
            buf[at : at + payload.nbytes] = payload.cast("B")
        self.filled.release()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if not self.filled.acquire(block, timeout):
            raise Empty
        buf = self.buf
        with self.get_lock:
            kind, meta, data = self._read_slot(buf, self._counter(0, buf))
        self.free.release()
        return _decode(kind, meta, data)

    def _read_slot(self, buf: memoryview, n: int) -> tuple[int, bytes, bytes | bytearray]:
        """The kind, metadata and payload of message ``n``, copied out of its slot."""
        at = 16 + n % self.slots * self.stride
        nbytes, kind, meta_len = _HEADER.unpack_from(buf, at)
        at += _HEADER.size
        meta = bytes(buf[at : at + meta_len])
        at += meta_len
        with buf[at : at + nbytes] as raw:  # one copy out of the slot
            data = bytes(raw) if kind == _BYTES else bytearray(raw)
        return kind, meta, data

    def drain(self, limit: int) -> list[Any]:
        """The messages fully put and not taken, read without a lock (every instance
        has stopped; one may have died holding ``get_lock``)."""
        from topo.result import RawItem

        buf = self.buf
        head = struct.unpack_from("Q", buf, 0)[0]
        items: list[Any] = []
        for i in range(min(self.filled.get_value(), self.slots, limit)):
            try:
                items.append(_decode(*self._read_slot(buf, head + i)))
            except Exception as e:
                at = 16 + (head + i) % self.slots * self.stride
                items.append(RawItem(bytes(buf[at : at + self.stride]), repr(e)))
        return items

    def put_nowait(self, obj: Any) -> None:
        self.put(obj, False)

    def get_nowait(self) -> Any:
        return self.get(False)

    def qsize(self) -> int:
        buf = self.buf
        head, tail = struct.unpack_from("QQ", buf, 0)
        return int(tail - head)

    def empty(self) -> bool:
        return self.qsize() <= 0

    def unlink(self) -> None:
        """Free the segment (the supervisor calls this at the end of the run)."""
        if self._shm is not None:
            free(self._shm)
            self._shm = None


def _encode(obj: Any) -> tuple[int, bytes, memoryview]:
    if isinstance(obj, bytes | bytearray | memoryview):
        return _BYTES, b"", memoryview(obj)
    module = type(obj).__module__
    if module == "numpy" and type(obj).__name__ == "ndarray" and not obj.dtype.hasobject:
        import numpy as np

        contiguous: Any = np.ascontiguousarray(obj)
        meta = pickle.dumps((contiguous.dtype.str, contiguous.shape))
        return _ARRAY, meta, memoryview(contiguous).cast("B")
    return _PICKLE, b"", memoryview(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _decode(kind: int, meta: bytes, data: bytes | bytearray) -> Any:
    if kind == _BYTES:
        return data
    if kind == _ARRAY:
        import numpy as np

        dtype, shape = pickle.loads(meta)
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    return pickle.loads(data)


def read_array(handle: SharedArray, segment: shared_memory.SharedMemory) -> Any:
    """The array's contents as nested lists, read through the creator's own mapping."""
    import numpy as np

    view = np.ndarray(handle.shape, dtype=handle.dtype, buffer=segment.buf)
    try:
        return view.tolist()
    finally:
        del view  # release the buffer so that the segment can be closed


def free(segment: Any) -> None:
    """Unmap and unlink a segment; quietly, since teardown must go on."""
    if isinstance(segment, ShmQueue):
        segment.unlink()
        return
    with contextlib.suppress(BufferError):
        segment.close()
    with contextlib.suppress(FileNotFoundError):
        segment.unlink()
