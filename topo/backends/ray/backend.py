"""The Ray backend's description: what it supports, and its launcher."""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING

from topo.backends import Capabilities, dev_shm_bytes
from topo.model import CHANNEL_KINDS, LOCK_KINDS

if TYPE_CHECKING:
    from topo.resolve import Plan
    from topo.supervise import Launcher, RunOptions


class RayBackend:
    """Instances as Ray tasks; channels and locks in one actor of the run (the hub).

    ``address`` is where the cluster is (``auto``, ``HOST:PORT``, ``ray://...``); None
    starts a local Ray for the run and stops it at the end.
    """

    name = "ray"
    capabilities = Capabilities(
        kinds=frozenset({*CHANNEL_KINDS, *LOCK_KINDS}),
        transports=frozenset({"auto", "mp", "pipe", "shm"}),
        unbounded_buffer="the memory of the run's hub actor",
        unread_queue_writer="what is put stays in the hub actor's memory until the run ends",
    )

    def __init__(self, address: str | None = None) -> None:
        if importlib.util.find_spec("ray") is None:
            raise ModuleNotFoundError("no module named 'ray'", name="ray")
        self.address = address

    def at(self, address: str | None) -> RayBackend:
        """The same backend, on the cluster at ``address``."""
        return RayBackend(address)

    def launcher(self, plan: Plan, options: RunOptions) -> Launcher:
        from topo.backends.ray.launcher import RayLauncher

        return RayLauncher(plan, options, self.address)

    def cpus(self) -> int:
        # The oversubscription check counts declared CPUs against the cluster's when it
        # can; before connecting, this machine's count is the best guess (a local Ray).
        return os.cpu_count() or 1

    def shared_memory(self) -> int | None:
        """ndarray channels live in this machine's /dev/shm (their users on this node)."""
        return dev_shm_bytes()
