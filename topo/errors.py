"""The few exception types topo raises, and the Diagnostic every spec problem becomes.

Each exception has one meaning (``topo.cli`` maps each to one message and exit code):

- ``SpecError``: the spec (or the command line that resolves it) is invalid. It carries
  every ``Diagnostic`` found; the CLI prints them and exits 2.
- ``UsageError``: an argument is malformed (a ``--sweep`` axis, a RUN reference that
  names no run...); exit 2. It is a ``ValueError`` too.
- ``RunError``: a run could not be carried out for a reason outside the spec
  (for example the manager process failed to start); exit 1.

An ``OSError`` (a run folder that cannot be created, a full disk) is left as it is
before anything starts, said again with what topo was doing; the CLI exits 2.

``outcome_document`` is the one shape of the JSON document of a command that ran
nothing: an invalid spec, an error, a validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem in a spec, located at the YAML node that causes it."""

    path: str
    line: int  # 1-based; 0 for a problem of the command line (a --set), not of a line
    col: int  # 1-based; 0 with line 0
    severity: Severity
    code: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}:{self.col}" if self.line else self.path
        return f"{where}: {self.severity}[{self.code}]: {self.message}"

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

    def to_json(self, name: str | None = None) -> dict[str, Any]:
        """The "invalid" document of ``outcome_document`` (what ``--json`` prints)."""
        return outcome_document(name, "invalid", EXIT_INVALID, self.diagnostics)


class UsageError(TopoError, ValueError):
    """An argument is malformed: a ``--sweep`` axis, ``--repeat 0``, a RUN reference..."""


class RunError(TopoError):
    """A run could not be carried out for a reason that is not in the spec."""


class PlacementError(RunError):
    """The cluster cannot hold the run (more CPUs than it has...): nothing started, and
    the CLI exits 2, as for a spec that cannot run."""


EXIT_INVALID = 2  # as topo.result.EXIT_CODES["invalid"]


def outcome_document(
    name: str | None,
    status: str,
    exit_code: int,
    diagnostics: Sequence[Diagnostic] = (),
    message: str | None = None,
) -> dict[str, Any]:
    """The JSON document of a command that ran nothing, in one shape everywhere:
    ``{"name", "status", "exit_code", "diagnostics": [...]}``, plus ``"message"`` when
    no diagnostic says what happened (a run folder that cannot be created...).

    ``name`` is the spec's (None when there is no spec); ``status`` is ``invalid``
    (exit code 2: nothing started), ``failed`` (1), ``interrupted`` (130), or ``ok``
    for a validation that found no error.
    """
    document: dict[str, Any] = {
        "name": name,
        "status": status,
        "exit_code": exit_code,
        "diagnostics": [d.to_json() for d in diagnostics],
    }
    if message is not None:
        document["message"] = message
    return document


def os_error_text(e: OSError) -> str:
    """An OSError in one line, without ``[Errno N]``: ``/x: Permission denied``."""
    text = e.strerror or str(e) or type(e).__name__
    names = [str(n) for n in (e.filename, e.filename2) if n is not None]
    return f"{' -> '.join(names)}: {text}" if names else text


def os_error_doing(doing: str, e: OSError) -> OSError:
    """``e`` said again with what topo was doing: ``cannot create run folder X: reason``
    (an OSError still, of the same kind: FileNotFoundError, PermissionError...)."""
    return OSError(e.errno, f"{doing}: {e.strerror or e}")
