"""The run context a target receives when its signature has a ``ctx`` parameter."""

# No ``from __future__ import annotations``: typing compiles each field's annotation of a
# NamedTuple when it is a string (~1.8 ms of every spawned instance, which imports this).
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple


class RunContext(NamedTuple):
    """Who this instance is in the run. Immutable; a NamedTuple, cheap to import."""

    name: str  # instance name: "worker[2]", or "producer" for a single instance
    process: str  # process name in the spec: "worker"
    replica: int  # 0-based index among the process's instances
    replicas: int
    seed: int  # this instance's seed; random (and numpy) are seeded with it
    params: Mapping[str, Any] = MappingProxyType({})  # the spec's params, resolved
    run_dir: str | None = None  # the run's record folder, None with --no-record
    spec_dir: str = "."
    attempt: int = 0  # 0 the first time; n after the n-th restart (its seed is derived anew)
