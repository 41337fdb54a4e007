"""Shared-memory channels: the queue's encodings and limits, arrays, and freeing."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from queue import Empty, Full

import numpy as np
import pytest

from topo.backends.local.shm import SharedArray, ShmQueue, free, read_array


@pytest.fixture
def queue() -> Iterator[ShmQueue]:
    q = ShmQueue(multiprocessing.get_context("spawn"), slots=2, slot_size=1 << 16)
    yield q
    q.unlink()


def test_bytes_arrays_and_objects_round_trip(queue: ShmQueue) -> None:
    array = np.arange(12, dtype=np.int32).reshape(3, 4)
    queue.put(b"raw bytes")
    queue.put(array)
    assert queue.get() == b"raw bytes"
    got = queue.get()
    assert got.dtype == np.int32 and got.shape == (3, 4) and (got == array).all()
    got[0, 0] = 99  # a private, writable copy: the slot is free again
    queue.put({"any": ("picklable", 1)})
    assert queue.get() == {"any": ("picklable", 1)}


def test_non_contiguous_arrays_are_copied_in_order(queue: ShmQueue) -> None:
    array = np.arange(16.0).reshape(4, 4).T
    queue.put(array)
    assert (queue.get() == array).all()


def test_bounded_and_timeouts(queue: ShmQueue) -> None:
    queue.put(b"a")
    queue.put(b"b")
    with pytest.raises(Full):
        queue.put(b"c", timeout=0.05)
    assert queue.qsize() == 2
    assert [queue.get(), queue.get()] == [b"a", b"b"]
    with pytest.raises(Empty):
        queue.get(timeout=0.05)
    with pytest.raises(Empty):
        queue.get_nowait()
    assert queue.empty()


def test_a_message_larger_than_a_slot_is_refused(queue: ShmQueue) -> None:
    with pytest.raises(ValueError, match="does not fit a slot of 65536 bytes"):
        queue.put(bytes(1 << 17))


def _consume(q: ShmQueue, n: int, out: multiprocessing.Queue) -> None:
    out.put(sum(int(q.get()[0]) for _ in range(n)))


def test_another_process_reads_what_this_one_puts(queue: ShmQueue) -> None:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    reader = ctx.Process(target=_consume, args=(queue, 20, out))
    reader.start()
    for i in range(20):  # more messages than slots: the writer waits for the reader
        queue.put(np.array([i]))
    assert out.get(timeout=30) == sum(range(20))
    reader.join(30)
    assert reader.exitcode == 0


def test_shared_array_and_freeing() -> None:
    handle, segment = SharedArray.create((2, 3), "int16", 5)
    view = handle.attach()
    view[1, 2] = -1
    assert read_array(handle, segment) == [[5, 5, 5], [5, 5, -1]]
    name = segment.name
    free(segment)
    assert not os.path.exists(f"/dev/shm/{name.lstrip('/')}")
