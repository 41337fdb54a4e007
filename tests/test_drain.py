"""topo.backends.local.drain: what is left in a channel, read without waiting or locks."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import struct
import time

from topo.backends.local.drain import _frames, read_pipe
from topo.result import RawItem

mp = multiprocessing.get_context("spawn")


def test_a_queue_is_read_even_while_its_lock_is_held() -> None:
    q = mp.Queue()
    for i in range(5):
        q.put(i)
    time.sleep(0.2)  # the feeder thread has flushed into the pipe
    assert q._rlock.acquire(timeout=1)  # as a reader killed inside get() would hold it
    started = time.monotonic()
    assert read_pipe(q._reader.fileno(), time.monotonic() + 2) == [0, 1, 2, 3, 4]
    assert time.monotonic() - started < 0.5
    q._rlock.release()
    q.close()
    q.join_thread()


def test_an_empty_pipe_gives_nothing_at_once() -> None:
    r, w = os.pipe()
    started = time.monotonic()
    assert read_pipe(r, time.monotonic() + 2) == []
    assert time.monotonic() - started < 0.5
    assert os.get_blocking(r)  # left as it was
    os.close(r)
    os.close(w)


def test_cut_and_unreadable_messages_are_kept_as_bytes() -> None:
    whole = pickle.dumps("whole")
    unreadable = b"\x80\x04not a pickle"
    raw = (
        struct.pack("!i", len(whole))
        + whole
        + struct.pack("!i", len(unreadable))
        + unreadable
        + struct.pack("!i", 100)
        + b"only part"
    )
    items = list(_frames(raw))
    assert items[0] == "whole"
    assert isinstance(items[1], RawItem) and items[1].data == unreadable
    assert items[2] == RawItem(b"only part", "a message cut short (its writer was stopped)")


def test_a_large_message_uses_the_long_header() -> None:
    data = pickle.dumps(b"x" * 10)
    raw = struct.pack("!i", -1) + struct.pack("!Q", len(data)) + data
    assert list(_frames(raw)) == [b"x" * 10]


def test_the_rest_of_a_message_a_stopped_reader_had_begun_is_kept_as_bytes() -> None:
    # A reader stopped after reading a header and part of a payload leaves the rest: its
    # first bytes are no header (here they read as a negative length).
    rest = b"\x80\x04\x95\x05" + b"tail of the payload"
    assert list(_frames(rest)) == [RawItem(rest, "the rest of a message a reader had begun")]
