"""topo.output: whole lines from every pipe, nothing lost at the end."""

from __future__ import annotations

import os
import time
from multiprocessing import Pipe

import pytest

from topo.backends.local.output import MAX_LINE, OutputPump


def test_lines_are_whole_and_named() -> None:
    lines: list[tuple[str, str]] = []
    pump = OutputPump(lambda name, line: lines.append((name, line)))
    pump.start()
    pipes = {name: Pipe(duplex=False) for name in ("a", "b")}
    for name, (reader, _) in pipes.items():
        pump.add(name, reader)
    a, b = pipes["a"][1].fileno(), pipes["b"][1].fileno()
    os.write(a, b"one, hal")
    os.write(b, b"two\n")
    os.write(a, b"f\nthree")  # the last line has no newline: handed on at the end
    pipes["a"][1].close()
    pipes["b"][1].close()
    pump.finish()
    assert sorted(lines) == [("a", "one, half"), ("a", "three"), ("b", "two")]
    assert not pump.is_alive()


def test_finish_without_any_pipe() -> None:
    pump = OutputPump(lambda name, line: None)
    pump.start()
    pump.finish()
    assert not pump.is_alive()


def test_a_pipe_still_open_is_left_to_its_holder() -> None:
    # A grandchild may keep an instance's output open after the instance is gone.
    pump = OutputPump(lambda name, line: None)
    pump.start()
    reader, writer = Pipe(duplex=False)
    pump.add("a", reader)
    pump.finish(timeout=0.2)
    assert pump.is_alive()  # still reading; a daemon thread, it never blocks exit
    writer.close()
    pump.join(5)
    assert not pump.is_alive()


def _pumped(*writes: bytes) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    pump = OutputPump(lambda name, line: lines.append((name, line)))
    pump.start()
    reader, writer = Pipe(duplex=False)
    pump.add("a", reader)
    for data in writes:
        os.write(writer.fileno(), data)
    writer.close()
    pump.finish()
    return lines


def test_carriage_returns_keep_what_a_terminal_shows() -> None:
    bars = [f"\r{p:3d}%|{'#' * (p // 10)}".encode() for p in range(0, 101, 10)]
    assert _pumped(*bars, b"\n", b"done\r\n") == [("a", "100%|##########"), ("a", "done")]


def test_a_progress_bar_without_newline_never_grows() -> None:
    lines: list[tuple[str, str]] = []
    pump = OutputPump(lambda name, line: lines.append((name, line)))
    pump.start()
    reader, writer = Pipe(duplex=False)
    pump.add("a", reader)
    for i in range(20_000):
        os.write(writer.fileno(), f"\rstep {i}".encode())
    time.sleep(0.2)
    assert max((len(p) for p in pump.partial.values()), default=0) < 100
    writer.close()
    pump.finish()
    assert lines == [("a", "step 19999")]


def test_a_huge_line_is_split_with_a_note_in_linear_time() -> None:
    chunk = b"x" * 65536
    started = time.monotonic()
    lines = _pumped(*[chunk] * (50 * 16), b"\n")  # 50 MiB, no newline until the end
    elapsed = time.monotonic() - started
    pieces = [line for name, line in lines if name == "a"]
    assert sum(len(p) for p in pieces) == 50 * 2**20
    assert max(len(p) for p in pieces) <= MAX_LINE
    assert [line for name, line in lines if name == ""] == [
        f"a printed a line longer than {MAX_LINE:,} bytes: split"
    ]
    assert elapsed < 10  # was 13.7 s and 388 MB (quadratic): about 0.1 s now


def test_pipes_added_before_the_start_are_read_without_waking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without epoll (macOS's kqueue, poll) each pipe added wakes the thread through a
    # pipe of its own; before it starts nothing reads that pipe, and a byte per
    # instance would fill it and block topo. It sees those pipes when it starts.
    import select
    import selectors

    monkeypatch.setattr(selectors, "DefaultSelector", selectors.PollSelector)
    lines: list[tuple[str, str]] = []
    pump = OutputPump(lambda name, line: lines.append((name, line)))
    pipes = [Pipe(duplex=False) for _ in range(3)]
    for at, (reader, writer) in enumerate(pipes):
        pump.add(f"i{at}", reader)
        os.write(writer.fileno(), f"line {at}\n".encode())
        writer.close()
    assert select.select([pump.wake_r], [], [], 0)[0] == []  # nothing written to wake it
    pump.start()
    pump.finish()
    assert sorted(lines) == [(f"i{at}", f"line {at}") for at in range(3)]
