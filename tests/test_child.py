"""The instance side (topo/backends/local/child.py): what every instance does first.

Each instance dies with topo's process, whatever the start method, and a spawned
instance imports only what it needs (each module costs every instance its CPU).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# A stand-in for topo's process: starts one child that calls die_with(its pid), prints
# the child's pid and what the child imported, then waits to be killed.
PARENT = """\
import multiprocessing, sys, time
sys.path.insert(0, sys.argv[2])
import sleeper

if __name__ == "__main__":
    if sys.argv[1] == "fork":
        from topo.backends.local.child import load_prctl

        load_prctl()  # as topo's process does before it forks instances
    ctx = multiprocessing.get_context(sys.argv[1])
    ready = ctx.SimpleQueue()
    child = ctx.Process(target=sleeper.sleep, args=(multiprocessing.current_process().pid, ready))
    child.start()
    print(child.pid, ready.get(), flush=True)
    time.sleep(60)
"""

SLEEPER = """\
import threading, time
from topo.backends.local import child


def sleep(supervisor_pid, ready):
    child.die_with(supervisor_pid)
    watcher = any(t.name == "topo-die-with-parent" for t in threading.enumerate())
    ready.put("prctl" if child._prctl is not None else "thread" if watcher else "none")
    time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent death: Linux only")
@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("start_method", "mechanism"),
    [("fork", "prctl"), ("spawn", "thread"), ("forkserver", "thread")],
)
def test_an_instance_dies_with_topo_killed(
    tmp_path: Path, start_method: str, mechanism: str
) -> None:
    # fork: the parent-death signal (prctl made before forking); spawn and forkserver:
    # a thread on a pidfd (no ctypes import in every instance)
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, start_method, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    child = 0
    try:
        assert parent.stdout is not None
        child_text, how = parent.stdout.readline().split()
        child = int(child_text)
        assert how == mechanism
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(child), f"{start_method}: the instance outlived topo's process"
    finally:
        parent.kill()
        parent.wait(timeout=10)
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)


WATCHED_SPEC = """\
start_method: spawn
locks:
  gate: lock
channels:
  q: {kind: queue, transport: mp}
processes:
  probe:
    target: modules:loaded
    uses: {gate: gate, q: q}
"""

MODULES = """\
import sys


def loaded(gate, q):
    with gate:
        return sorted(m for m in sys.modules if m.split(".")[0] in ("ctypes", "pydantic", "topo"))
"""


@pytest.mark.timeout(60)
def test_a_spawned_instance_imports_only_what_it_needs(tmp_path: Path) -> None:
    # a lock (watched: its wrapper writes on the board) and a queue: the board's shared
    # memory, the sampler and the parent-death watch all without ctypes or pydantic
    (tmp_path / "spec.yaml").write_text(WATCHED_SPEC)
    (tmp_path / "modules.py").write_text(MODULES)
    run = subprocess.run(
        [sys.executable, "-m", "topo", "run", "--json", "--no-record", "spec.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert run.returncode == 0, run.stderr
    loaded = json.loads(run.stdout)["processes"]["probe"]["result"]
    assert not [m for m in loaded if not m.startswith("topo")], loaded
    assert set(loaded) <= {
        "topo",
        "topo.backends",
        "topo.backends.local",
        "topo.backends.local.child",
        "topo.backends.local.instrument",
        "topo.context",
        "topo.jsonable",
        "topo.targets",
    }, loaded


def test_the_named_tuples_an_instance_imports_compile_nothing() -> None:
    # typing compiles a NamedTuple's string annotations (``from __future__ import
    # annotations``) one by one: ~1.8 ms of every spawned instance for RunContext alone
    from typing import ForwardRef

    from topo.backends.local.instrument import _SnapshotFields
    from topo.context import RunContext

    for cls in (RunContext, _SnapshotFields):
        compiled = {k: v for k, v in cls.__annotations__.items() if isinstance(v, ForwardRef)}
        assert compiled == {}, f"{cls.__name__}: {compiled}"


@pytest.mark.timeout(30)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks")
def test_the_stack_dump_of_forked_instances_is_registered_only_while_topo_forks() -> None:
    import faulthandler

    from topo.backends.local import child

    with child.inherit_stack_dumps():
        pid = os.fork()
        if pid == 0:  # an instance forked meanwhile: SIGUSR1 dumps its stack, no more
            code = 1 if not child._stack_dumps_registered else 0
            os.kill(os.getpid(), signal.SIGUSR1)
            os._exit(code)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # not ended by SIGUSR1, flag inherited
    assert not child._stack_dumps_registered
    assert faulthandler.unregister(signal.SIGUSR1) is False  # nothing left registered here


def test_a_topo_run_inside_an_instance_keeps_the_instances_stack_dump() -> None:
    import faulthandler

    from topo.backends.local import child

    child._register_stack_dumps()  # as child_main does in an instance
    try:
        with child.inherit_stack_dumps():  # a run of topo's own, inside that instance
            pass
        assert child._stack_dumps_registered
        assert faulthandler.unregister(signal.SIGUSR1) is True  # still registered
    finally:
        child._stack_dumps_registered = False
        faulthandler.unregister(signal.SIGUSR1)
