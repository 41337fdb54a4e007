"""Backends: the ways of carrying out a Plan, and the registry that finds them.

A backend builds a ``Launcher`` for a plan (see topo/supervise.py: the supervisor
keeps every policy, the launcher only carries out) and declares what it supports,
so that a spec asking for something it lacks is refused before anything starts,
at the line that asks for it. Backend ``NAME`` lives in the package
``topo.backends.NAME`` and exposes ``BACKEND``: adding one touches nothing else.
Others can be added at run time with ``register``.

Every instance imports this package (its entry point lives in a backend), so it stays
empty: what it offers lives in ``topo.backends.base``, imported on first use (its
Protocol and NamedTuple classes cost a spawned instance ~1 ms).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's own, without importing typing
if TYPE_CHECKING:
    from topo.backends.base import (
        BUILTIN,
        Backend,
        Capabilities,
        dev_shm_bytes,
        get_backend,
        register,
    )

__all__ = ["BUILTIN", "Backend", "Capabilities", "dev_shm_bytes", "get_backend", "register"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from topo.backends import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
