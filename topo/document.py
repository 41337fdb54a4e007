"""A spec as read: its values, and the file, line and column each one was written at.

Kept apart from the YAML parser (topo/yamlpos.py) and free of PyYAML: a spec validated
before comes back from the cache (topo/api.py) with its Document, which must not cost a
run the import of yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topo.errors import Diagnostic, SpecError

Loc = tuple[str | int, ...]
Pos = tuple[int, int]


@dataclass
class Document:
    """Loaded YAML data with the position (1-based line, column) of every node."""

    path: str
    text: str
    data: Any
    positions: dict[Loc, Pos] = field(default_factory=dict)
    key_positions: dict[Loc, Pos] = field(default_factory=dict)
    # Composed from several files (``topo run a.yaml -f b.yaml``): the file of each node
    # another file than ``path`` wrote, and every file, in order.
    sources: dict[Loc, str] = field(default_factory=dict)
    files: tuple[str, ...] = ()

    def position(self, loc: Loc, *, key: bool = False) -> Pos:
        """Where ``loc`` is written; the closest enclosing node when it is not."""
        return self.place(loc, key=key)[1]

    def place(self, loc: Loc, *, key: bool = False) -> tuple[str, Pos]:
        """The file and position where ``loc`` is written (or its closest enclosing node)."""
        if key and loc in self.key_positions:
            return self.sources.get(loc, self.path), self.key_positions[loc]
        for n in range(len(loc), -1, -1):
            pos = self.positions.get(loc[:n])
            if pos is not None:
                return self.sources.get(loc[:n], self.path), pos
        return self.path, (1, 1)

    def diagnostic(
        self, loc: Loc, code: str, message: str, *, key: bool = False, severity: str = "error"
    ) -> Diagnostic:
        path, (line, col) = self.place(loc, key=key)
        return Diagnostic(path, line, col, severity, code, message)  # type: ignore[arg-type]


def read_source(path: str | Path) -> bytes:
    """The bytes of a spec file; ``SpecError`` (T000) if it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        message = f"cannot read: {e.strerror or e}"
        raise SpecError([Diagnostic(str(path), 1, 1, "error", "T000", message)]) from None
