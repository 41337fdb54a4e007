"""What runs inside each instance's process, before and around its target.

Kept free of pydantic, networkx and the CLI so that a spawned instance imports
only what it needs: the stdlib and the target's own module.
"""

from __future__ import annotations

import _signal
import contextlib
import faulthandler
import functools
import os
import pickle
import signal
import sys
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from topo.backends.local import instrument
from topo.backends.local.instrument import Board
from topo.context import RunContext
from topo.jsonable import to_jsonable
from topo.targets import call_target, target_traceback


class Job:
    """Everything an instance needs, in picklable form (a plain class: no dataclasses
    to import in every instance)."""

    __slots__ = (
        "args",
        "board",
        "close_fds",
        "context",
        "env",
        "names",
        "objects",
        "sampled",
        "slot",
        "supervisor_pid",
        "target",
    )

    def __init__(
        self,
        target: str,
        args: dict[str, Any],
        env: dict[str, str],
        context: RunContext,
        objects: dict[str, Any] | None = None,  # bound channels and locks
        supervisor_pid: int = 0,
        board: Board | None = None,  # the deadlock detector's shared table
        slot: int = 0,  # this instance's row on the board
        sampled: dict[str, int] | None = None,  # watched parameter -> primitive number
        close_fds: list[int] | None = None,  # inherited pipe ends of others (fork)
        names: dict[str, str] | None = None,  # bound parameter -> channel or lock name
    ) -> None:
        self.target = target
        self.args = args
        self.env = env
        self.context = context
        self.objects = objects or {}
        self.supervisor_pid = supervisor_pid
        self.board = board
        self.slot = slot
        self.sampled = sampled or {}
        self.close_fds = close_fds or []
        self.names = names or {}


def _redirect_output(output: Connection) -> None:
    # The supervisor reads fd 1 and 2 through this pipe, prefixes each line with the
    # instance's name and keeps topo's own stdout free for --json.
    fd = output.fileno()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    output.close()
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]


_PR_SET_PDEATHSIG = 1
# libc's prctl, made in topo's process before it forks instances (``load_prctl``): each
# forked instance calls it without making a ctypes function of its own (~50 pages of
# memory it would copy). None in a spawned instance, which imports no ctypes.
_prctl: Callable[..., int] | None = None


def load_prctl() -> None:
    """Make ``prctl`` for the instances this process will fork (Linux only)."""
    global _prctl
    if _prctl is None and sys.platform.startswith("linux"):
        import ctypes

        _prctl = ctypes.CDLL(None, use_errno=True).prctl


def _parent_death_signal(supervisor_pid: int) -> None:
    assert _prctl is not None
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != supervisor_pid:  # it died before prctl took effect
        os._exit(1)


def die_with(supervisor_pid: int) -> None:
    """End this process when topo's process dies, even by SIGKILL.

    Under fork topo is the parent and made ``prctl`` before forking (``load_prctl``):
    Linux's parent-death signal does it. Otherwise a thread waits on a pidfd of topo's
    process: under forkserver the parent is the fork server, which outlives topo as
    long as its children do; under spawn, importing ctypes would cost each instance
    ~1.6 ms of CPU (a thread costs ~0.1 ms), so it does only where there is no pidfd.
    That thread needs the GIL to act: while the target holds it in one long C call, the
    guardian (topo/backends/guardian.py) kills the instance.
    """
    if not sys.platform.startswith("linux"):
        return
    if os.getppid() == supervisor_pid and _prctl is not None:
        _parent_death_signal(supervisor_pid)
        return
    import select
    import threading

    try:
        pidfd = os.pidfd_open(supervisor_pid)
    except ProcessLookupError:
        os._exit(1)
    except OSError:  # no pidfd (a kernel before 5.3, a seccomp profile)
        if os.getppid() == supervisor_pid:  # spawn: the signal, whatever ctypes costs
            load_prctl()
            _parent_death_signal(supervisor_pid)
        return

    def watch() -> None:
        select.select([pidfd], [], [])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="topo-die-with-parent", daemon=True).start()


# Whether this process has the instances' stack dump registered: by child_main in an
# instance, or by topo's process while it forks a batch (inherit_stack_dumps). A forked
# instance inherits the registration and this flag with it.
_stack_dumps_registered = False


def _register_stack_dumps() -> None:
    # The supervisor asks for the stack of an instance it finds deadlocked; the dump goes
    # to descriptor 2, which is the instance's output pipe once _redirect_output ran.
    global _stack_dumps_registered
    faulthandler.register(signal.SIGUSR1, file=2, all_threads=False)
    _stack_dumps_registered = True


@contextlib.contextmanager
def inherit_stack_dumps() -> Iterator[None]:
    """In topo's process, while it forks instances: register their stack dump here
    once, rather than in each forked instance (~16 pages of memory each copied), and
    unregister it after. (In an instance running topo in turn, its own registration
    stays as it is; a SIGUSR1 dump registered otherwise, which faulthandler cannot
    report, is dropped.)"""
    global _stack_dumps_registered
    if _stack_dumps_registered:
        yield
        return
    _register_stack_dumps()
    try:
        yield
    finally:
        _stack_dumps_registered = False
        faulthandler.unregister(signal.SIGUSR1)


def _fail_on_lost_puts(job: Job, report: Connection) -> None:
    """A ``multiprocessing.Queue`` pickles what is put in a feeder thread, which prints
    a traceback and drops the item when it cannot (``out.put(lambda: 1)``): the put
    would be lost without a word. Here such an error fails the instance at once."""
    queues = sys.modules.get("multiprocessing.queues")  # loaded by unpickling a queue
    if queues is None:
        return
    for param, obj in job.objects.items():
        if hasattr(obj, "bound_as"):  # topo's transports: put() itself raises, saying where
            obj.bound_as = (job.context.name, param, job.names.get(param, param))
        elif isinstance(obj, queues.Queue):  # JoinableQueue too
            # The feeder calls self._on_queue_feeder_error: an instance attribute wins.
            obj._on_queue_feeder_error = functools.partial(
                _lost_put, job.context.name, param, job.names.get(param, param), report
            )


def _lost_put(
    instance: str, param: str, channel: str, report: Connection, error: BaseException, obj: Any
) -> None:
    text = (
        f"{instance}: {param}.put() of a {type(obj).__name__} could not be sent through "
        f"channel '{channel}': {type(error).__name__}: {error}\n"
    )
    with contextlib.suppress(Exception):
        sys.stderr.write(text)
        sys.stderr.flush()
    with contextlib.suppress(Exception):
        _send(report, ("error", text))
    os._exit(1)


def _send(report: Connection, message: tuple[str, Any]) -> None:
    # What Connection.send does, with pickle's own Pickler rather than multiprocessing's
    # (which copies its table of reducers for each call): the parent's recv() reads it.
    report.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def _close_all(fds: list[int]) -> None:
    """Close ``fds``: one system call per run of consecutive numbers (close_range)."""
    ordered = sorted(fds)
    at = 0
    while at < len(ordered):
        end = at
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        os.closerange(ordered[at], ordered[end] + 1)
        at = end + 1


def child_main(job: Job, report: Connection, output: Connection | None) -> None:
    """Entry point of every instance: set up, call the target, report its result."""
    # The supervisor stops instances itself; a terminal Ctrl-C must not print a
    # KeyboardInterrupt traceback in every child. Under fork the supervisor's own SIGTERM
    # handler would be inherited: the default makes SIGTERM end this process (and its
    # own children, e.g. a Pool's). Both came blocked (see LocalLauncher.start): a signal
    # sent meanwhile is handled now, as these say.
    # (signal's C functions: its Python wrappers make an enum of each old handler and
    # blocked signal, whose code touches ~40 pages a forked instance would copy.)
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
    # A process group of its own: what it starts is stopped with it (the launcher kills
    # the group), and a terminal's Ctrl-C reaches topo alone, which stops everything.
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, (_signal.SIGINT, _signal.SIGTERM))
    die_with(job.supervisor_pid)
    # Under fork this process inherited every pipe end the parent had open: holding the
    # sending end of another instance's one-way pipe, it would keep that pipe's reader
    # from ever seeing EOFError. Only its own ends stay open.
    _close_all(job.close_fds)
    if output is not None:
        _redirect_output(output)
    if job.env:
        os.environ.update(job.env)
    _fail_on_lost_puts(job, report)
    if job.board is not None:
        instrument.attach(job.board, job.slot)
        if not _stack_dumps_registered:
            _register_stack_dumps()
        instrument.sample({id(job.objects[param]): prim for param, prim in job.sampled.items()})
    try:
        result = call_target(job.target, job.args, job.objects, job.context)
    except SystemExit:
        raise
    except BaseException as e:
        text = target_traceback(e)  # the user's code, not this frame
        sys.stderr.write(text)
        _send(report, ("error", text))
        report.close()
        sys.exit(1)
    _send(report, ("result", to_jsonable(result)))
    report.close()
    instrument.exiting()
