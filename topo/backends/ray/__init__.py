"""The Ray backend: the same spec and targets on a Ray cluster (``pip install 'topo[ray]'``).

Nothing here imports Ray until a run asks for this backend: ``BACKEND`` is built on
first use, and fails with a clear message when Ray is not installed.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "BACKEND":
        from topo.backends.ray.backend import RayBackend

        return RayBackend()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
