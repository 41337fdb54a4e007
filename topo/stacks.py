"""The stacks a deadlock prints, with the user's frames first.

When topo finds a deadlock it asks each blocked instance for its Python stack
(``faulthandler``: it works while the main thread waits in C). Most of such a stack is
topo's and the standard library's: ``queue.get`` -> ``connection.recv`` -> ... at the
top, and topo's ``child_main`` and multiprocessing's bootstrap at the bottom, around
the one line of the user's that waits. ``StackFolder`` folds those away as the lines
go by, leaving a count in their place; ``--full-stacks`` shows every frame. The run's
logs keep the stacks whole.
"""

from __future__ import annotations

import os
import re

_HEADER = "Stack (most recent call first):"
_FRAME = re.compile(r'^  File "(?P<file>.*)", line \d+ in .*$')
FOLDED_HEADER = (
    "Stack (most recent call first; topo's and the standard library's frames folded, "
    "--full-stacks shows them):"
)


def _folders() -> tuple[str, tuple[str, ...]]:
    """topo's own folder, and the standard library's (none if it cannot be told: then
    only topo's frames are folded)."""
    topo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "")
    try:
        import sysconfig  # here: every run makes a StackFolder, few print a stack

        paths = sysconfig.get_paths()
    except Exception:  # in the output thread, which must go on
        return topo, ()
    stdlib = {paths.get("stdlib", ""), paths.get("platstdlib", "")} - {""}
    return topo, tuple(os.path.join(p, "") for p in stdlib)


class StackFolder:
    """Filters an instance's printed lines: inside a stack dump, each run of frames in
    topo or the standard library becomes one ``... N frames folded`` line."""

    def __init__(self) -> None:
        self.folders: tuple[str, tuple[str, ...]] | None = None  # topo's, stdlib's: _folders
        self.folded: dict[str, int] = {}  # instance -> frames folded since its last line out

    def _ours(self, file: str) -> bool:
        """A frame of topo's, or of the standard library (not of what is installed
        inside its folder: site-packages is the user's and third parties')."""
        if file in ("<string>", "<stdin>") or file.startswith("<frozen "):
            return True  # multiprocessing's `python -c` entry point, and frozen modules
        if self.folders is None:
            self.folders = _folders()
        topo, stdlib = self.folders
        path = os.path.abspath(file)
        if path.startswith(topo):
            return True
        installed = (
            f"{os.sep}site-packages{os.sep}" in path or f"{os.sep}dist-packages{os.sep}" in path
        )
        return path.startswith(stdlib) and not installed

    def folds(self, name: str, line: str) -> bool:
        """Whether ``line`` of ``name`` is in a stack dump (the rest passes untouched)."""
        return name in self.folded or line == _HEADER

    def __call__(self, name: str, line: str) -> list[str]:
        """The lines to show for ``line`` of instance ``name`` (none, it, or a count and it)."""
        if line == _HEADER:
            self.folded[name] = 0
            return [FOLDED_HEADER]
        if name not in self.folded:
            return [line]
        frame = _FRAME.match(line)
        if frame is not None and self._ours(frame["file"]):
            self.folded[name] += 1
            return []
        count = self.folded.pop(name) if frame is None else self.folded[name]
        shown = [f"  ... {count} frame{'s' if count != 1 else ''} folded"] if count else []
        if frame is not None:
            self.folded[name] = 0  # still in the stack
        return [*shown, line]
