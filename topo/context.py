"""The run context a target receives when its signature has a ``ctx`` parameter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunContext:
    name: str  # instance name: "worker[2]", or "producer" for a single instance
    process: str  # process name in the spec: "worker"
    replica: int  # 0-based index among the process's instances
    replicas: int
    seed: int  # this instance's seed; random (and numpy) are seeded with it
    params: dict[str, Any] = field(default_factory=dict)
    run_dir: str | None = None  # the run's record folder, None with --no-record
    spec_dir: str = "."
