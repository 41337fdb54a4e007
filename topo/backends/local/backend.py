"""The local backend's description: what it supports, and its launcher."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from topo.backends import Capabilities, dev_shm_bytes
from topo.model import CHANNEL_KINDS, LOCK_KINDS

if TYPE_CHECKING:
    from topo.resolve import Plan
    from topo.supervise import Launcher, RunOptions


class LocalBackend:
    name = "local"
    capabilities = Capabilities(
        kinds=frozenset({*CHANNEL_KINDS, *LOCK_KINDS}),
        transports=frozenset({"auto", "mp", "pipe", "socket", "shm"}),
    )

    def launcher(self, plan: Plan, options: RunOptions) -> Launcher:
        from topo.backends.local.launcher import LocalLauncher

        return LocalLauncher(plan, options)

    def cpus(self) -> int:
        """CPUs this process may run on (its affinity where the OS tells it)."""
        try:
            return len(os.sched_getaffinity(0)) or 1
        except (AttributeError, OSError):
            return os.cpu_count() or 1

    def shared_memory(self) -> int | None:
        """The size of /dev/shm, where multiprocessing's shared memory lives (Linux)."""
        return dev_shm_bytes()
