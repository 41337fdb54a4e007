"""What a run returns: per-instance outcomes, final state, and their JSON form."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "failed", "invalid", "deadlock", "timeout", "interrupted"]

EXIT_CODES: dict[str, int] = {
    "ok": 0,
    "failed": 1,
    "invalid": 2,
    "deadlock": 3,
    "timeout": 4,
    "interrupted": 130,
}
EXIT_SIGTERM = 143


@dataclass
class InstanceResult:
    """How one instance ended. ``state`` is one of: not started, running, exited,
    failed, killed, stopped (by topo, at the end of the run), timeout."""

    exit_code: int | None = None
    result: Any = None
    restarts: int = 0
    duration_s: float = 0.0
    state: str = "not started"
    error: str | None = None  # the traceback, when the target raised
    pid: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = {
            "exit_code": self.exit_code,
            "result": self.result,
            "restarts": self.restarts,
            "duration_s": round(self.duration_s, 6),
            "state": self.state,
            "pid": self.pid,
        }
        if self.error is not None:
            data["error"] = self.error
        return data


@dataclass
class RunResult:
    """The outcome of ``topo.run``; ``to_json()`` is what ``topo run --json`` prints."""

    name: str
    status: Status
    seed: int | None
    params: dict[str, Any]
    run_dir: str | None = None
    duration_s: float = 0.0
    processes: dict[str, InstanceResult] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    message: str | None = None  # why the run ended, when it was not ok
    exit_code: int | None = None  # set for signals; derived from status otherwise

    def __post_init__(self) -> None:
        if self.exit_code is None:
            self.exit_code = EXIT_CODES[self.status]

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "exit_code": self.exit_code,
            "seed": self.seed,
            "params": to_jsonable(self.params),
            "run_dir": self.run_dir,
            "duration_s": round(self.duration_s, 6),
            "processes": {n: r.to_json() for n, r in self.processes.items()},
            "state": self.state,
        }
        if self.message:
            data["message"] = self.message
        return data


def to_jsonable(value: Any, _depth: int = 0) -> Any:
    """Convert to JSON types: tuples and sets become lists, bytes text, others their repr."""
    if _depth > 100:
        return repr(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [to_jsonable(v, _depth + 1) for v in items]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value), _depth + 1)
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        try:
            return to_jsonable(tolist(), _depth + 1)
        except Exception:
            pass
    return repr(value)
