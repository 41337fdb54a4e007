"""The local backend: every instance a process of this machine, through multiprocessing.

Instances import this package (their entry point is ``child``), so it stays empty:
``BACKEND`` is built on first use.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "BACKEND":
        from topo.backends.local.backend import LocalBackend

        return LocalBackend()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
