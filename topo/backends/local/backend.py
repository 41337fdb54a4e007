"""The local backend's description: what it supports, and its launcher."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from topo.backends import Capabilities
from topo.spec import CHANNEL_KINDS, LOCK_KINDS

if TYPE_CHECKING:
    from topo.checks import Finding
    from topo.resolve import Plan
    from topo.supervise import Launcher, RunOptions


class LocalBackend:
    name = "local"
    capabilities = Capabilities(
        kinds=frozenset({*CHANNEL_KINDS, *LOCK_KINDS}),
        transports=frozenset({"pipe", "shm"}),
    )

    def launcher(self, plan: Plan, options: RunOptions) -> Launcher:
        from topo.backends.local.launcher import LocalLauncher

        return LocalLauncher(plan, options)

    def findings(self, plan: Plan) -> Iterator[Finding]:
        return iter(())
