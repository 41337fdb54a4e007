"""What a run returns: per-instance outcomes, final state, and their JSON form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, NamedTuple

from topo.jsonable import to_jsonable

__all__ = [
    "EXIT_CODES",
    "EXIT_SIGTERM",
    "InstanceResult",
    "RawItem",
    "RunResult",
    "State",
    "Status",
    "to_jsonable",
]

# "killed" is only ever written by topo's guardian into the record of a run whose topo
# was killed (kill -9) before it could finish it.
Status = Literal["ok", "failed", "invalid", "deadlock", "timeout", "interrupted", "killed"]

EXIT_CODES: dict[str, int] = {
    "ok": 0,
    "failed": 1,
    "invalid": 2,
    "deadlock": 3,
    "timeout": 4,
    "interrupted": 130,
    "killed": 137,
}
EXIT_SIGTERM = 143


class RawItem(NamedTuple):
    """A message left in a channel that could not be read back as an object: its bytes
    as they were, and why (``topo.load_undelivered`` gives these for such items)."""

    data: bytes
    error: str


class State(StrEnum):
    """Where an instance is in its life. What it is blocked in, if anything, is kept
    apart (``InstanceStatus.detail``); display text is made from both at the edge."""

    NOT_STARTED = "not started"
    RUNNING = "running"
    EXITED = "exited"  # its target returned: exit code 0
    FAILED = "failed"  # it ended with another exit code
    KILLED = "killed"  # a signal ended it, not topo
    STOPPED = "stopped"  # topo stopped it, at the end of the run
    TIMEOUT = "timeout"  # topo stopped it: it ran past its own timeout

    @property
    def ended(self) -> bool:
        return self not in (State.NOT_STARTED, State.RUNNING)


@dataclass
class InstanceResult:
    """How one instance ended."""

    exit_code: int | None = None
    result: Any = None
    restarts: int = 0
    duration_s: float = 0.0
    state: State = State.NOT_STARTED
    error: str | None = None  # the traceback, when the target raised
    pid: int | None = None
    seeds: list[int] = field(default_factory=list)  # one per attempt: the first, each restart

    def to_json(self) -> dict[str, Any]:
        data = {
            "exit_code": self.exit_code,
            "result": self.result,
            "restarts": self.restarts,
            "duration_s": round(self.duration_s, 6),
            "state": str(self.state),
            "pid": self.pid,
        }
        if self.error is not None:
            data["error"] = self.error
        if len(self.seeds) > 1:  # restarted: each attempt drew from its own seed
            data["seeds"] = self.seeds
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
    # Messages still in channels once every instance had stopped: how many, and the
    # messages themselves (kept in the run folder, not in the JSON).
    undelivered: dict[str, int] = field(default_factory=dict)
    leftovers: dict[str, list[Any]] = field(default_factory=dict, repr=False, compare=False)
    record_complete: bool = True  # False when part of the run's record could not be written
    backend: str = "local"  # where it ran
    cluster: dict[str, Any] | None = None  # the backend's own facts (Ray: version, nodes)
    # What the supervisor saw (topo/timeline.py): flow per channel, each instance's
    # shares of time, the stage that limited the run, and the trace (trace.json).
    channels: dict[str, Any] = field(default_factory=dict)
    shares: dict[str, dict[str, float]] = field(default_factory=dict)
    bottleneck: dict[str, Any] | None = None
    trace: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.exit_code is None:
            self.exit_code = EXIT_CODES[self.status]

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RunResult:
        """A result back from its ``to_json()`` (a sweep's runs, read from sweep.json);
        the trace and the messages left in channels stay in the run's folder."""
        processes = {
            name: InstanceResult(
                p.get("exit_code"),
                p.get("result"),
                p.get("restarts", 0),
                p.get("duration_s", 0.0),
                State(p.get("state", "not started")),
                p.get("error"),
                p.get("pid"),
                list(p.get("seeds") or []),
            )
            for name, p in (doc.get("processes") or {}).items()
        }
        return cls(
            doc["name"],
            doc["status"],
            doc.get("seed"),
            dict(doc.get("params") or {}),
            run_dir=doc.get("run_dir"),
            duration_s=doc.get("duration_s", 0.0),
            processes=processes,
            state=dict(doc.get("state") or {}),
            message=doc.get("message"),
            exit_code=doc.get("exit_code"),
            undelivered=dict(doc.get("undelivered") or {}),
            backend=doc.get("backend", "local"),
            cluster=doc.get("cluster"),
            channels=dict(doc.get("channels") or {}),
            bottleneck=doc.get("bottleneck"),
        )

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
            "undelivered": dict(self.undelivered),
            "backend": self.backend,
            "channels": self.channels,
            "bottleneck": self.bottleneck,
        }
        for name, share in self.shares.items():
            if name in data["processes"]:
                data["processes"][name]["shares"] = share
        if self.cluster:
            data["cluster"] = self.cluster
        if self.message:
            data["message"] = self.message
        return data
