"""The local launcher: multiprocessing processes, their primitives, output and /proc.

It carries out what the supervisor (topo/supervise.py) decides: builds the
primitives, starts each instance as a process with its bindings, reports what
instances return and when they exit, stops them, and tells who waits for what
from the instances' instrumentation (topo/backends/local/instrument.py).
"""

from __future__ import annotations

import atexit
import contextlib
import math
import multiprocessing
import os
import selectors
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import popen_fork, util
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, NoReturn, TextIO

from topo.backends.guardian import Guardian
from topo.backends.local import drain, procfs
from topo.backends.local.child import Job, child_main, inherit_stack_dumps, load_prctl
from topo.backends.local.instrument import EXITING_PRIMITIVE, Board
from topo.backends.local.output import OutputPump
from topo.backends.local.primitives import Primitives
from topo.deadlock import EXITING, Wait
from topo.errors import RunError
from topo.resolve import Instance, Plan
from topo.supervise import (
    Event,
    Exited,
    OutputSink,
    Raised,
    Returned,
    RunOptions,
    StartFailed,
)
from topo.targets import add_to_path

STACK_DUMP_WAIT_S = 0.3  # for the stacks of a deadlock to reach the output
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
SWEEP_S = 0.1  # how often an instance whose end is a sentinel pipe is looked at (see wait)
ORPHAN_ROUNDS = 5  # how deep a tree of escaped processes is followed down


def _kill_group(pgid: int | None) -> None:
    """SIGKILL the process group an instance made (its leader may be gone already: the
    group lives while any member does, and its id is not reused meanwhile)."""
    if pgid is not None and pgid != os.getpgid(0):
        with contextlib.suppress(OSError):  # gone already, or never a group of its own
            os.killpg(pgid, signal.SIGKILL)


FD_MARGIN = 64  # for topo itself: its record, the manager, the guardian, imports


FDS_PER_INSTANCE = 5


def fds_needed(plan: Plan) -> int:
    """Descriptors this process holds at once for a run of ``plan``: per instance the
    read ends of its report and output pipes, multiprocessing's two ends of its exit
    pipe (none where topo forks it itself) and a pidfd (a batch of instances about to
    start holds fewer: their pipes' four ends); per queue or pipe its two ends; the
    margin holds the rest (the pipe forked instances share, see LocalLauncher.open)."""
    channels = sum(1 for c in plan.spec.channels.values() if c.traits.messages)
    return FDS_PER_INSTANCE * len(plan.instances) + 2 * channels + FD_MARGIN


def raise_fd_limit(needed: int) -> int | None:
    """Raise this process's soft limit of open files towards ``needed``, as far as the
    hard limit allows; the limit then in force (None where it cannot be told)."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return None if soft == resource.RLIM_INFINITY else soft


def _multiprocessing_helpers() -> set[int]:
    """multiprocessing's own processes (resource tracker, fork server): they end by
    themselves once the run's descriptors are closed."""
    from multiprocessing import forkserver, resource_tracker

    pids = {
        getattr(resource_tracker._resource_tracker, "_pid", None),
        getattr(forkserver._forkserver, "_forkserver_pid", None),
    }
    return {p for p in pids if p is not None}


def _start_helpers(method: str) -> bool:
    """Start multiprocessing's resource tracker and fork server, if not yet running,
    before an instance is started with the stop signals blocked; True if this started
    the fork server.

    The tracker's ``ensure_running()`` unblocks SIGINT and SIGTERM in the caller when it
    starts the tracker (CPython 3.11-3.13): started during ``process.start()`` it would
    let the first instance begin unprotected. The fork server is started with them
    blocked, so that the instances it forks start blocked too (and it is stopped with the
    run, so that nothing forked from it later inherits that).
    """
    if method == "fork":
        return False
    from multiprocessing import forkserver, resource_tracker

    # Once: every later ensure_running() writes a probe to the tracker and wakes it, and
    # spawn's own start() probes it already (a start per instance, ~0.1 ms each).
    if getattr(resource_tracker._resource_tracker, "_fd", None) is None:
        resource_tracker.ensure_running()
    if method != "forkserver":
        return False
    before = forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return forkserver._forkserver._forkserver_pid != before  # type: ignore[attr-defined]


def _pidfds_work() -> bool:
    """Whether this kernel gives pidfds (Linux 5.3; a seccomp profile may refuse them)."""
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    return True


# From Python 3.13 on, multiprocessing's fork start clears atexit in the child, registers
# its exit function there (which flushes what the instance's queues still hold) and runs
# them before os._exit; before, _bootstrap called that function itself. Read from the
# running version's own code, which _run_forked must match.
_ATEXIT_IN_CHILD = "_run_exitfuncs" in popen_fork.Popen._launch.__code__.co_names  # type: ignore[attr-defined]


_close_stdin = util._close_stdin  # type: ignore[attr-defined]
_null_stdin: TextIO | None = None  # made once in topo's process, see _make_null_stdin


def _make_null_stdin() -> None:
    """Open, once and before forking instances, the stdin multiprocessing gives each
    forked child: a text file reading /dev/null (descriptor 0 is left alone, as there).
    Made in each child (``util._close_stdin``) it costs ~45 copied pages of memory and
    ~0.1 ms of CPU per instance; inherited, a page or two."""
    global _null_stdin
    if _null_stdin is None and sys.stdin is not None:  # none: fd 0 may be closed, keep it so
        with contextlib.suppress(OSError):
            _null_stdin = open(  # noqa: SIM115 - kept open for every forked child
                os.open(os.devnull, os.O_RDONLY), encoding="utf-8", closefd=False
            )


def _inherit_null_stdin() -> None:
    """In a forked child, what ``util._close_stdin`` does, with the inherited file.
    Once: what this instance forks in turn runs multiprocessing's own."""
    util._close_stdin = _close_stdin  # type: ignore[attr-defined]
    if sys.stdin is None or _null_stdin is None:
        _close_stdin()
        return
    with contextlib.suppress(OSError, ValueError):
        sys.stdin.close()
    sys.stdin = _null_stdin


def _run_forked(process: BaseProcess, parent_alive: int) -> NoReturn:
    """In a child forked by ``LocalLauncher._fork_all``: what multiprocessing's fork
    start runs there (popen_fork.Popen._launch), never returning to the caller's code."""
    code = 1
    try:
        # Two steps of multiprocessing's child start made cheaper, with the same effect.
        util._close_stdin = _inherit_null_stdin  # type: ignore[attr-defined]
        if not util._afterfork_registry:  # type: ignore[attr-defined]
            # Nothing to reset after the fork: skip the walk of an empty weak dictionary.
            process._after_fork = util._finalizer_registry.clear  # type: ignore[attr-defined]
        if _ATEXIT_IN_CHILD:
            atexit._clear()
            atexit.register(util._exit_function)  # type: ignore[attr-defined]
        code = process._bootstrap(parent_sentinel=parent_alive)  # type: ignore[attr-defined]
    finally:
        if _ATEXIT_IN_CHILD:
            atexit._run_exitfuncs()
        os._exit(code)


class _ForkedPopen(popen_fork.Popen):
    """multiprocessing's fork Popen of a child forked directly (``_fork_all``), without
    its exit pipe or the pipe its ``parent_process()`` watches (one is shared, see
    LocalLauncher.open): its sentinel is its pidfd while topo holds one (_ended_fd)."""

    def __init__(self, pid: int) -> None:  # not Popen's: the child is forked already
        self.returncode, self.finalizer, self.pid = None, None, pid
        self.sentinel: int | None = None  # type: ignore[assignment]


def _adopt(process: BaseProcess, pid: int) -> None:
    """Make ``process`` what ``start()`` makes of it, for a child forked directly."""
    process._popen = _ForkedPopen(pid)  # type: ignore[attr-defined]
    del process._target, process._args, process._kwargs  # type: ignore[attr-defined]


def _set_sentinel(process: BaseProcess, fd: int | None) -> None:
    """A directly forked child's sentinel, for join(timeout) as multiprocessing's."""
    popen = process._popen  # type: ignore[attr-defined]
    if isinstance(popen, _ForkedPopen):
        popen.sentinel = process._sentinel = fd  # type: ignore[attr-defined]


def _ended_fd(process: BaseProcess, method: str) -> tuple[int | None, bool]:
    """(descriptor that reads ready once ``process`` has ended, whether it is a pidfd).

    A pidfd of one of this process's children is ready when that child has ended, and
    only then. multiprocessing's sentinel under spawn and fork is a pipe whose other end
    the child's own children inherit (it reads EOF only once they are gone too), and
    which reads EOF a moment before the child can be reaped. Under forkserver the
    sentinel is the fork server's socket, ready once the server has sent the exit
    status that ``is_alive()`` reads: exact, and used as it is. A child forked
    directly (``_adopt``) has no sentinel: its pidfd is made its sentinel, and if none
    can be opened (no descriptor left) there is nothing to watch: it is swept.
    """
    if method != "forkserver" and hasattr(os, "pidfd_open") and process.pid is not None:
        with contextlib.suppress(OSError):
            pidfd = os.pidfd_open(process.pid)
            _set_sentinel(process, pidfd)
            return pidfd, True
    if isinstance(process._popen, _ForkedPopen):  # type: ignore[attr-defined]
        return None, False
    return process.sentinel, False


def _stop_forkserver() -> None:
    from multiprocessing import forkserver

    stop = getattr(forkserver._forkserver, "_stop", None)  # CPython's, for its own tests
    if stop is not None:
        with contextlib.suppress(OSError):
            stop()


@dataclass
class _Handle:
    process: BaseProcess
    report: Connection
    # What says the process has ended, watched by LocalLauncher.ready: a pidfd of it
    # (Linux, spawn and fork), else multiprocessing's sentinel (see _ended_fd).
    ended: int | None
    pidfd: bool
    # A sentinel pipe (spawn or fork without pidfds), or nothing: swept (see wait).
    swept: bool


@dataclass(eq=False)
class _Starting:
    """An instance between its preparation and its registration (LocalLauncher.start_many)."""

    instance: Instance
    job: Job
    process: BaseProcess
    report_in: Connection
    report_out: Connection
    output_in: Connection
    output_out: Connection

    def ends(self) -> list[int]:
        """The descriptors of its pipes to topo, both ends."""
        ends = (self.report_in, self.report_out, self.output_in, self.output_out)
        return [end.fileno() for end in ends]

    def write_ends(self) -> list[int]:
        """The descriptors its process writes to topo through."""
        return [self.report_out.fileno(), self.output_out.fileno()]


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start processes without re-running the parent's ``__main__`` in them.

    Under spawn and forkserver, multiprocessing re-imports the main script in every
    child: for the ``topo`` command that is the whole CLI (typer, rich...). Targets are
    importable modules and never need it.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved: dict[str, Any] = {
        k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__
    }
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


class LocalLauncher:
    """Instances as processes of ``multiprocessing``, with the spec's start method."""

    def __init__(self, plan: Plan, options: RunOptions) -> None:
        self.plan = plan
        self.options = options
        self.mp: Any = multiprocessing.get_context(plan.spec.start_method)
        if plan.spec.start_method == "forkserver":
            # The fork server imports these once; every instance forks with them loaded.
            # (It starts on first use, with this process's sys.path, spec folder included.)
            add_to_path(plan.spec_dir)
            modules = sorted({i.target.partition(":")[0] for i in plan.instances})
            self.mp.set_forkserver_preload(["topo.backends.local.child", *modules])
        self.handles: dict[str, _Handle] = {}  # running instances
        # Events not yet handed to the supervisor: kept here until wait() returns them, so
        # that a signal landing in the middle of wait() loses none.
        self.outbox: list[Event] = []
        self.exit_codes: dict[str, int | None] = {}  # of instances reaped, by name
        self.groups: set[int] = set()  # the process group of every instance started
        self.children_before: set[int] = set()
        self.was_subreaper = False
        self.own_forkserver = False  # started for this run, stopped with it
        self.guardian: Guardian | None = None
        self.slots = {inst.name: slot for slot, inst in enumerate(plan.instances)}
        self.board: Board | None = None
        if options.watch:
            self.board = Board(len(plan.instances), sum(1 for _ in plan.declared()))
        self.primitives: Primitives | None = None
        self.pump: OutputPump | None = None
        # Every running instance's report pipe and end (_Handle.ended), registered when
        # it starts: wait() costs what happened, not a new poll set of every instance.
        self.ready = selectors.DefaultSelector()
        self.swept_count = 0  # running instances whose end is a sentinel pipe
        self.next_sweep = 0.0  # when to look at those again
        self.unstarted_pipe_users = {
            name: {inst.name for inst, _ in plan.users_of(name)}
            for name, c in plan.spec.channels.items()
            if c.kind == "pipe"
        }
        self.kept_pipes: set[str] = set()  # all users started, ends kept for restarts
        self.forks = plan.spec.start_method == "fork"
        # Under fork with pidfds, instances are forked here directly (_fork_all), sharing
        # one pipe whose reading end their parent_process() watches: (read, write).
        self.parent_alive: tuple[int, int] | None = None

    def open(self, output: OutputSink) -> None:
        # What an instance starts lives in the instance's process group (killed with it);
        # what escapes it (setsid, a double fork) comes back to this process, made the
        # reaper of its orphans, and is stopped at the end. Children this process had
        # before the run are not the run's.
        self.guardian = Guardian()  # first: it must inherit none of the run's descriptors
        self.children_before = set(procfs.children_of(os.getpid()))
        self.was_subreaper = procfs.set_child_subreaper(True)
        if self.options.run_dir is not None:
            self.guardian.record(self.options.run_dir)
        self._check_resources()
        # Started at the first wait(), after the first instances: a second thread in
        # this process when it forks costs each forked instance ~12 pages copied
        # (threading's and the interpreter's after-fork cleanup of it).
        self.pump = OutputPump(output)
        if self.forks:  # once here, not in each instance nor the manager (child.die_with)
            load_prctl()
            _make_null_stdin()
        self.primitives = Primitives(self.plan, self.mp)
        for name in self.primitives.shared_names():
            self.guardian.segment(name)
        if self.forks and _pidfds_work():  # last: the manager must not hold it
            self.parent_alive = os.pipe()

    def _check_resources(self) -> None:
        """Refuse, before anything starts, a run this machine cannot hold: more file
        descriptors than this process may open (after raising its soft limit to the
        hard one), more shared memory than /dev/shm has free (else a SIGBUS later)."""
        needed = fds_needed(self.plan)
        limit = raise_fd_limit(needed)
        if limit is not None and needed > limit:
            raise RunError(
                f"this run needs about {needed} file descriptors at once "
                f"({FDS_PER_INSTANCE} per instance, 2 per queue or pipe), and this process "
                f"may open {limit}: raise the limit (ulimit -n {needed}) or run fewer instances"
            )
        from topo.checks.placement import shared_bytes

        sizes = shared_bytes(self.plan)
        try:
            st = os.statvfs("/dev/shm")
        except OSError:
            return
        free = st.f_bavail * st.f_frsize
        if sizes and sum(sizes.values()) > free:
            largest = max(sizes, key=sizes.__getitem__)
            raise RunError(
                f"the shared-memory channels need {sum(sizes.values()):,} bytes "
                f"({largest!r}: {sizes[largest]:,}), and /dev/shm has {free:,} free: "
                "make them smaller or free /dev/shm"
            )

    def start_many(self, starts: Sequence[tuple[Instance, int]]) -> list[int | None]:
        """Start several instances: all they need is made first, then they are started
        one after the other, then registered. Under fork each page this process writes
        between two forks is copied again (a page fault each): the work between forks,
        more than the forks, was what topo added per instance."""
        assert self.pump is not None
        prepared: list[_Starting] = []
        started: list[_Starting] = []
        try:
            for instance, attempt in starts:
                prepared.append(self._prepare(instance, attempt))
            if _start_helpers(self.mp.get_start_method()):
                self.own_forkserver = True
            if self.forks:
                self._close_in_children(prepared)
            # SIGINT and SIGTERM stay blocked in each new process until child_main has set
            # its own handlers: under fork it would otherwise run the supervisor's, under
            # spawn a Ctrl-C while it unpickles its job would print a KeyboardInterrupt
            # traceback.
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
            try:
                # Registered once here, the instances' stack dump is inherited by those
                # forked (see child.inherit_stack_dumps).
                dumps = self.board is not None and self.forks
                with inherit_stack_dumps() if dumps else contextlib.nullcontext():
                    self._start_all(prepared, started)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        except BaseException as e:  # a signal's KeyboardInterrupt too
            raise StartFailed([p.process.pid for p in started], e) from e
        finally:
            for p in prepared:
                # The writing ends are the started child's (or nobody's); topo keeps the
                # reading ends of those started. (Closing twice is nothing.)
                ends = [p.report_out, p.output_out]
                if p not in started:
                    ends += [p.report_in, p.output_in]
                for end in ends:
                    end.close()
            for p in started:
                self._register(p)
        return [p.process.pid for p in started]

    def _start_all(self, prepared: list[_Starting], started: list[_Starting]) -> None:
        """Start each prepared instance, noting in ``started`` those that are."""
        if self.parent_alive is not None:
            self._fork_all(prepared, started)
        else:
            with _main_module_hidden():
                for p in prepared:
                    p.process.start()
                    started.append(p)
                    # topo reaps its instances itself (wait, _reap): out of
                    # multiprocessing's set of children at once, which the next
                    # start() would poll (a waitpid each), and might reap before
                    # _register opens the instance's pidfd.
                    multiprocessing.process._children.discard(p.process)  # type: ignore[attr-defined]
                    # At once: they are the child's now, and count against the
                    # limit here (see _close_in_children for a forked child).
                    p.report_out.close()
                    p.output_out.close()

    def _close_in_children(self, batch: list[_Starting]) -> None:
        """What each instance of ``batch`` closes once forked: a forked child holding
        another's writing end would hide that one's EOF.

        Forked by ``Process.start()``: the writing ends of the instances after it, still
        open here (topo closes each pair after its start, and multiprocessing's next
        pipes take those numbers again). Forked by ``_fork_all``, where nothing is
        closed or opened between forks: the pipes to topo of the whole batch (numbers in
        a row: a few close_range calls) but its own writing ends, and the shared pipe's
        writing end (see open)."""
        if self.parent_alive is None:
            write_ends = [fd for p in batch for fd in p.write_ends()]
            for at, p in enumerate(batch):
                p.job.close_fds += write_ends[2 * (at + 1) :]
            return
        ends = [fd for p in batch for fd in p.ends()]
        ends.append(self.parent_alive[1])
        for p in batch:
            own = set(p.write_ends())
            p.job.close_fds += [fd for fd in ends if fd not in own]

    def _fork_all(self, batch: list[_Starting], started: list[_Starting]) -> None:
        """Fork each instance of ``batch`` here, with nothing else between two forks.

        What ``Process.start()`` does around each fork (two pipes, a finalizer, the
        checks) wrote ~85 pages of this process per instance, each then copied (a page
        fault), and made it ~0.25 ms of CPU slower per instance than this loop: on two
        cores the instances already running slow this process down in turn. The
        children run multiprocessing's own child code (``_run_forked``)."""
        assert self.parent_alive is not None
        alive = self.parent_alive[0]
        # What start() checks and does first (between two forks nothing here writes to
        # them: once a batch is enough).
        if multiprocessing.current_process()._config.get("daemon"):  # type: ignore[attr-defined]
            raise AssertionError("daemonic processes are not allowed to have children")
        util._flush_std_streams()  # type: ignore[attr-defined]
        pids: list[int] = []
        try:
            for p in batch:
                pid = os.fork()
                if pid == 0:
                    _run_forked(p.process, alive)
                pids.append(pid)
        finally:
            for p, pid in zip(batch, pids, strict=False):
                _adopt(p.process, pid)
                started.append(p)

    def _prepare(self, instance: Instance, attempt: int) -> _Starting:
        """An instance's job, pipes and process object, not started yet."""
        assert self.primitives is not None
        context = self.plan.context(instance, self.options.run_dir, attempt)
        slot = self.slots[instance.name]
        watching = self.board is not None
        bound = self.primitives.bind(instance, watch=watching)
        job = Job(
            instance.target,
            instance.args,
            instance.env,
            context,
            bound,
            supervisor_pid=os.getpid(),
            board=self.board,
            slot=slot,
            sampled=self.primitives.sampled(instance) if watching else None,
            close_fds=self._others_pipe_ends(bound) if self.forks else None,
            names={b.param: b.name for b in instance.bindings},
        )
        if self.board is not None:
            self.board.reset(slot)
        report_in, report_out = self.mp.Pipe(duplex=False)
        output_in, output_out = self.mp.Pipe(duplex=False)
        process = self.mp.Process(
            target=child_main, name=instance.name, args=(job, report_out, output_out)
        )
        return _Starting(instance, job, process, report_in, report_out, output_in, output_out)

    def _register(self, started: _Starting) -> None:
        """Everything this process keeps of an instance it started."""
        assert self.pump is not None and started.process.pid is not None
        process, pid = started.process, started.process.pid
        # Its own process group (child_main does it too: whichever comes first).
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        self.groups.add(pid)
        if self.guardian is not None:
            self.guardian.group(pid)
        self.pump.add(started.instance.name, started.output_in)
        name = started.instance.name
        method = self.mp.get_start_method()
        ended, pidfd = _ended_fd(process, method)
        swept = not pidfd and method != "forkserver"
        self.swept_count += swept
        self.handles[name] = _Handle(process, started.report_in, ended, pidfd, swept)
        self.ready.register(started.report_in.fileno(), selectors.EVENT_READ, (name, True))
        if ended is not None:
            self.ready.register(ended, selectors.EVENT_READ, (name, False))
        self._release_pipe_ends(started.instance)

    def _others_pipe_ends(self, bound: dict[str, Any]) -> list[int]:
        """The descriptors of the pipe ends open here that are not ``bound``'s."""
        assert self.primitives is not None
        mine = {id(obj) for obj in bound.values()}
        return [
            end.fileno()
            for name in self.unstarted_pipe_users.keys() | self.kept_pipes
            for end in self.primitives.pipe_ends(name)
            if not end.closed and id(end) not in mine
        ]

    def _release_pipe_ends(self, instance: Instance) -> None:
        # Once every user of a pipe has its end, the parent closes its own copies so that
        # a reader sees EOFError when its writer is gone instead of waiting for ever.
        # Kept open when a user may restart and need its end again.
        assert self.primitives is not None
        for b in instance.bindings:
            users = self.unstarted_pipe_users.get(b.name)
            if users is None:
                continue
            users.discard(instance.name)
            restartable = any(
                self.plan.process_of(i).restart == "on-failure"
                for i, _ in self.plan.users_of(b.name)
            )
            if not users:
                del self.unstarted_pipe_users[b.name]
                ends = self.primitives.pipe_ends(b.name)
                if restartable:
                    self.kept_pipes.add(b.name)
                elif self.plan.model(b.name).duplex:
                    for end in ends:
                        end.close()
                else:  # the receiving end stays, to read what is left at the end
                    ends[1].close()

    # ----- events ---------------------------------------------------------------------------

    def wait(self, timeout: float) -> list[Event]:
        if self.pump is not None and not self.pump.started():
            self.pump.start()
        if self.outbox:
            timeout = 0.0
        if not self.handles:
            time.sleep(timeout)  # only restarts are due
        else:
            ready: set[str] = set()
            for key, _ in self.ready.select(timeout):
                name, is_report = key.data
                if is_report:
                    self.outbox.extend(self._receive(name))
                else:
                    ready.add(name)
            looked_at = set(ready)
            if self.swept_count and time.monotonic() >= self.next_sweep:
                # A sentinel pipe reads EOF only once what the instance started has closed
                # it too: those instances are looked at now and then, whatever it says.
                looked_at.update(n for n, h in self.handles.items() if h.swept)
                self.next_sweep = time.monotonic() + SWEEP_S
            # in start order: the first failure reaped is the one the run reports
            for name in sorted(looked_at, key=self.slots.__getitem__):
                handle = self.handles[name]
                if not handle.process.is_alive():
                    self._reap(name, handle)
                elif name in ready and handle.swept:
                    # EOF a moment before it can be reaped (or it closed its end): the
                    # sweep sees its end, and select() must not return at once meanwhile
                    self._unwatch(handle.ended)
        events, self.outbox = self.outbox, []
        return events

    def _unwatch(self, fd: int | None) -> None:
        if fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.ready.unregister(fd)

    def _forget(self, handle: _Handle) -> None:
        """Stop watching an instance's end; close it if it is topo's own pidfd."""
        self._unwatch(handle.ended)
        self.swept_count -= handle.swept
        if handle.pidfd and handle.ended is not None:
            os.close(handle.ended)
            _set_sentinel(handle.process, None)

    def _receive(self, name: str) -> list[Event]:
        report = self.handles[name].report
        try:
            kind, payload = report.recv()
        except (EOFError, OSError):
            self._unwatch(report.fileno())
            report.close()
            return []
        except Exception as e:
            kind, payload = "error", f"its result could not be received: {e}"
        return [Returned(name, payload) if kind == "result" else Raised(name, payload)]

    def _reap(self, name: str, handle: _Handle) -> None:
        """The one place an exited instance is collected: what it reported, then its exit."""
        handle.process.join()
        while not handle.report.closed and handle.report.poll():
            self.outbox.extend(self._receive(name))
        if not handle.report.closed:
            self._unwatch(handle.report.fileno())
        handle.report.close()
        self._forget(handle)
        del self.handles[name]
        _kill_group(handle.process.pid)  # what it started ends with it
        self.exit_codes[name] = handle.process.exitcode
        self.outbox.append(Exited(name, handle.process.exitcode))

    def _signal(self, name: str, kill: bool) -> None:
        handle = self.handles.get(name)
        if handle is None:
            # Reaped already, and the supervisor may not have heard (a signal came in
            # between): say it again; a second Exited of the same instance is ignored.
            if name in self.exit_codes:
                self.outbox.append(Exited(name, self.exit_codes[name]))
            return
        if handle.process.is_alive():
            pid = handle.process.pid
            try:  # the instance and whatever it started, at once
                if pid is None or os.getpgid(pid) != pid:
                    raise ProcessLookupError
                os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
            except OSError:
                handle.process.kill() if kill else handle.process.terminate()

    def terminate(self, name: str) -> None:
        self._signal(name, kill=False)

    def kill(self, name: str) -> None:
        self._signal(name, kill=True)

    # ----- who waits for what ---------------------------------------------------------------

    def waits(self) -> dict[str, Wait]:
        if self.board is None or self.primitives is None:
            return {}
        snapshot = self.board.snapshot()
        names = self.primitives.names
        waits = {}
        for name in self.handles:
            blocked = snapshot.blocked(self.slots[name])
            if blocked is not None:
                op, prim = blocked
                waits[name] = EXITING if prim == EXITING_PRIMITIVE else Wait(op, names[prim])
        return waits

    def holders(self) -> dict[str, str]:
        if self.board is None or self.primitives is None:
            return {}
        owners = self.board.snapshot().owners
        instances = self.plan.instances
        return {
            self.primitives.names[prim]: instances[slot].name
            for prim, slot in enumerate(owners)
            if slot >= 0
        }

    def progress(self) -> float:
        """The running instances' main threads' CPU time and context switches, summed:
        it stands still only if they are all blocked for good (see procfs.activity)."""
        total = 0.0
        for handle in self.handles.values():
            pid = handle.process.pid
            value = procfs.activity(pid) if pid is not None else None
            if value is None:  # no /proc: progress cannot be told from standing still
                return math.nan  # never equal to itself: no deadlock is declared
            total += value
        return total

    def cpu_seconds(self, name: str) -> float | None:
        handle = self.handles.get(name)
        pid = handle.process.pid if handle is not None else None
        return procfs.cpu_seconds(pid) if pid else None

    def dump_stacks(self) -> None:
        """Ask each running instance for its Python stack (faulthandler, on SIGUSR1)."""
        for handle in self.handles.values():
            if handle.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(handle.process.pid, signal.SIGUSR1)
        time.sleep(STACK_DUMP_WAIT_S)

    # ----- the end --------------------------------------------------------------------------

    def _stop_descendants(self) -> None:
        """Kill what the run's instances started and left behind: their process groups,
        and the orphans that escaped them (now this process's children)."""
        for pid in self.groups:
            _kill_group(pid)
        helpers = {*self.children_before, *_multiprocessing_helpers()}
        if self.guardian is not None and self.guardian.pid is not None:
            helpers.add(self.guardian.pid)
        if self.primitives is not None and self.primitives.manager is not None:
            helpers.add(self.primitives.manager._process.pid)  # type: ignore[attr-defined]
        for _ in range(ORPHAN_ROUNDS):  # an orphan's own children come back to us in turn
            orphans = [p for p in procfs.children_of(os.getpid()) if p not in helpers]
            if not orphans:
                break
            for pid in orphans:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            for pid in orphans:
                with contextlib.suppress(OSError):
                    os.waitpid(pid, 0)  # ours to reap: it is our child now
        if not self.was_subreaper:
            procfs.set_child_subreaper(False)

    def drain(self) -> dict[str, list[Any]]:
        if self.primitives is None:
            return {}
        return self.primitives.drain(time.monotonic() + drain.MAX_SECONDS)

    def depths(self) -> dict[str, int]:
        """How many items wait in each queue now (for the timeline)."""
        return self.primitives.depths() if self.primitives is not None else {}

    def read_state(self) -> dict[str, Any]:
        return self.primitives.read_state() if self.primitives is not None else {}

    def close(self) -> None:
        self._stop_descendants()
        for handle in self.handles.values():  # not reaped: the run ended in an error
            self._forget(handle)
        self.ready.close()
        if self.pump is not None:
            self.pump.finish()
        if self.primitives is not None:
            self.primitives.close()
        if self.own_forkserver:
            _stop_forkserver()
        if self.parent_alive is not None:
            for fd in self.parent_alive:
                os.close(fd)
            self.parent_alive = None
        if self.guardian is not None:
            self.guardian.done()
