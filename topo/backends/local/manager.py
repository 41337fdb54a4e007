"""The run's manager process, for dict, list, namespace and object channels and for
``via: manager``. A module of its own: importing multiprocessing.managers is left to
the runs that need one.
"""

from __future__ import annotations

import functools
import os
import signal
from multiprocessing.context import BaseContext
from multiprocessing.managers import SyncManager
from typing import Any

from topo.backends.local.child import die_with
from topo.errors import RunError
from topo.model import ObjectChannel
from topo.resolve import Plan
from topo.targets import add_to_path, load_target


class TopoManager(SyncManager):
    """The run's manager; ``object`` channels register their factories on it."""


def _make_object(factory: str, spec_dir: str, /, **kwargs: Any) -> Any:
    # Runs in the manager's process, which imports the factory from the spec's folder.
    return load_target(factory, spec_dir)(**kwargs)


def _manager_init(spec_dir: str, supervisor_pid: int) -> None:
    # Ctrl-C goes to the whole terminal group; the manager must outlive it long enough
    # for the supervisor to read the final state, and is shut down by it afterwards.
    die_with(supervisor_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the supervisor's, under fork
    add_to_path(spec_dir)


def start_manager(plan: Plan, mp: BaseContext) -> TopoManager:
    """Start the manager process of ``plan``; raise ``RunError`` if it cannot start."""
    for name, channel in plan.spec.channels.items():
        if isinstance(channel, ObjectChannel):
            TopoManager.register(
                f"topo_object_{name}",
                callable=functools.partial(_make_object, channel.factory, str(plan.spec_dir)),
                exposed=channel.methods,
            )
    manager = TopoManager(ctx=mp)
    try:
        manager.start(_manager_init, (str(plan.spec_dir), os.getpid()))
    except Exception as e:
        raise RunError(f"the manager process did not start: {e}") from e
    return manager
