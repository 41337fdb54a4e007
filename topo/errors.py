"""The few exception types topo raises, and the Diagnostic every spec problem becomes.

Each exception has one meaning:

- ``SpecError``: the spec (or the command line that resolves it) is invalid. It carries
  every ``Diagnostic`` found; the CLI prints them and exits 2.
- ``RunError``: a run could not be carried out for a reason outside the spec
  (for example the manager process failed to start).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem in a spec, located at the YAML node that causes it."""

    path: str
    line: int  # 1-based
    col: int  # 1-based
    severity: Severity
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.severity}[{self.code}]: {self.message}"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class TopoError(Exception):
    """Base class of every error topo raises on purpose."""


class SpecError(TopoError):
    """The spec is invalid; ``diagnostics`` says where and why (at least one error)."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))

    def to_json(self) -> str:
        return json.dumps([d.to_json() for d in self.diagnostics])


class RunError(TopoError):
    """A run could not be carried out for a reason that is not in the spec."""
