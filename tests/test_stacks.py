"""topo.stacks: a deadlock's stacks, the user's frames first."""

from __future__ import annotations

import multiprocessing.connection
import os
import sysconfig

import topo
from topo.stacks import FOLDED_HEADER, StackFolder

STDLIB = multiprocessing.connection.__file__
TOPO = os.path.join(os.path.dirname(topo.__file__), "targets.py")
SITE = os.path.join(sysconfig.get_paths()["purelib"], "numpy", "core.py")


def frame(path: str, line: int = 1, func: str = "f") -> str:
    return f'  File "{path}", line {line} in {func}'


def test_frames_of_topo_and_the_stdlib_fold_into_counts() -> None:
    fold = StackFolder()
    lines = [
        "Stack (most recent call first):",
        frame(STDLIB),
        frame(STDLIB),
        frame("/home/me/app.py", 12, "work"),
        frame(SITE),  # installed code is not the standard library's
        frame(TOPO),
        frame("<string>", 1, "<module>"),
    ]
    shown = [out for line in lines for out in fold("w", line)]
    assert shown == [
        FOLDED_HEADER,
        "  ... 2 frames folded",
        frame("/home/me/app.py", 12, "work"),
        frame(SITE),
    ]
    # the next line ends the stack: the frames folded at its bottom are counted
    assert fold("w", "done") == ["  ... 2 frames folded", "done"]
    assert fold("w", "more") == ["more"]  # and the instance's lines go through untouched
    assert fold("other", frame(STDLIB)) == [frame(STDLIB)]  # not in a stack


def test_a_line_after_folded_frames_says_how_many() -> None:
    fold = StackFolder()
    fold("w", "Stack (most recent call first):")
    assert fold("w", frame(TOPO)) == []
    assert fold("w", "next line") == ["  ... 1 frame folded", "next line"]
