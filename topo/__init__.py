"""topo: a declarative runner for Python multiprocessing topologies.

Public API: ``load``, ``validate``, ``check``, ``run``, ``Spec``, ``Plan``,
``RunResult``, ``Diagnostic`` and the errors. Attributes are imported on first use
so that ``import topo`` (which every instance does) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load": "topo.api",
    "validate": "topo.api",
    "check": "topo.api",
    "run": "topo.api",
    "Spec": "topo.spec",
    "Plan": "topo.resolve",
    "RunResult": "topo.result",
    "RawItem": "topo.result",
    "undelivered": "topo.api",
    "InstanceResult": "topo.result",
    "RunContext": "topo.context",
    "Diagnostic": "topo.errors",
    "TopoError": "topo.errors",
    "SpecError": "topo.errors",
    "RunError": "topo.errors",
}

__all__ = [
    "Diagnostic",
    "InstanceResult",
    "Plan",
    "RawItem",
    "RunContext",
    "RunError",
    "RunResult",
    "Spec",
    "SpecError",
    "TopoError",
    "__version__",
    "check",
    "load",
    "run",
    "undelivered",
    "validate",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'topo' has no attribute {name!r}")


if TYPE_CHECKING:
    from topo.api import check, load, run, undelivered, validate
    from topo.context import RunContext
    from topo.errors import Diagnostic, RunError, SpecError, TopoError
    from topo.resolve import Plan
    from topo.result import InstanceResult, RawItem, RunResult
    from topo.spec import Spec
