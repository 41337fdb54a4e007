"""topo.output: whole lines from every pipe, nothing lost at the end."""

from __future__ import annotations

import os
from multiprocessing import Pipe

from topo.backends.local.output import OutputPump


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
