"""What a backend is (``Backend``, ``Capabilities``) and the registry that finds one
(``get_backend``, ``register``); imported through ``topo.backends``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from topo.resolve import Plan
    from topo.supervise import Launcher, RunOptions

BUILTIN = ("local", "ray")


class Capabilities(NamedTuple):
    """What a backend can build and do; anything else in a spec is refused (T070)."""

    kinds: frozenset[str]  # channel and lock kinds
    via_manager: bool = True  # `via: manager`, and the manager kinds
    transports: frozenset[str] = frozenset({"auto", "mp", "pipe"})  # queue transports
    start_methods: frozenset[str] = frozenset({"spawn", "fork", "forkserver"})
    deadlock_detection: bool = True
    instead: Mapping[str, str] = {}  # unsupported kind or feature -> what to use instead
    # How the checks word what bounds a channel without maxsize (T101), in this backend.
    unbounded_buffer: str = "the OS pipe buffer under it"
    unread_queue_writer: str = (
        "a writer that has put more than a pipe buffer holds never exits, waiting for it to drain"
    )


class Backend(Protocol):
    name: str
    capabilities: Capabilities

    def launcher(self, plan: Plan, options: RunOptions) -> Launcher:
        """A launcher for one run of ``plan``."""
        ...

    def cpus(self) -> int:
        """How many CPUs the instances of a run share (for T123)."""
        ...

    def shared_memory(self) -> int | None:
        """Bytes there are for shared memory in all (for T124); None if unknown."""
        ...


def dev_shm_bytes() -> int | None:
    """The size of this machine's /dev/shm, where shared memory lives (Linux)."""
    import os

    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return st.f_blocks * st.f_frsize


_REGISTERED: dict[str, Callable[[], Backend]] = {}


def register(name: str, factory: Callable[[], Backend]) -> None:
    """Make ``factory()`` the backend called ``name``."""
    _REGISTERED[name] = factory


def get_backend(name: str = "local", *, address: str | None = None) -> Backend:
    """The backend called ``name`` (on the cluster at ``address``, for a backend that
    has clusters); ``ValueError`` naming the known ones if none is."""
    backend = _find(name)
    if address is None:
        return backend
    at = getattr(backend, "at", None)
    if at is None:
        raise ValueError(
            f"the {name} backend runs on this machine: an address is for --backend ray"
        )
    located: Backend = at(address)
    return located


def _find(name: str) -> Backend:
    if name in _REGISTERED:
        return _REGISTERED[name]()
    if name.isidentifier():
        try:
            module = importlib.import_module(f"topo.backends.{name}")
            backend: Backend | None = getattr(module, "BACKEND", None)
        except ModuleNotFoundError as e:
            if e.name == f"topo.backends.{name}":
                pass  # no such backend: said below
            else:
                raise ValueError(
                    f"backend {name!r} needs {e.name}, which is not installed "
                    f"(pip install 'topo[{name}]')"
                ) from e
        else:
            if backend is not None:  # else a module of the package that is no backend
                return backend
    known = ", ".join(repr(n) for n in sorted({*BUILTIN, *_REGISTERED}))
    raise ValueError(f"unknown backend {name!r}: the known ones are {known}")
