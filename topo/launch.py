"""The local backend: build the primitives, start the instances, supervise, stop.

The supervisor is one loop in the parent that waits on every instance's exit
sentinel and report pipe. Instances start when the processes they are ``after``
have all finished with exit code 0. The first instance to fail (after its
restarts) fails the run: every other instance is stopped (SIGTERM, then SIGKILL
after ``GRACE_PERIOD_S``) and whatever was returned so far is kept.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from topo.backend import InstanceStatus, OutputSink, RunOptions
from topo.child import Job, child_main
from topo.context import RunContext
from topo.errors import RunError
from topo.output import OutputPump
from topo.primitives import Primitives
from topo.resolve import Instance, Plan
from topo.result import EXIT_SIGTERM, InstanceResult, RunResult, Status
from topo.targets import add_to_path
from topo.watch import (
    EXITING,
    OWNED_KINDS,
    QUIET_S,
    Board,
    Waiter,
    activity,
    cpu_seconds,
    describe,
    find_deadlock,
)

QUEUE_KINDS = frozenset({"queue", "joinable_queue", "simple_queue"})

GRACE_PERIOD_S = 3.0  # between SIGTERM and SIGKILL when topo stops an instance
POLL_INTERVAL_S = 0.1  # longest sleep of the supervisor between checks
RESTART_BACKOFF_S = 0.1  # first restart delay; doubles with each restart...
RESTART_BACKOFF_MAX_S = 5.0  # ...up to this
# A restart storm gives up, as systemd's StartLimitBurst/StartLimitIntervalSec do:
# more than RESTART_BURST restarts of one instance within RESTART_WINDOW_S fail the run.
STATUS_INTERVAL_S = 0.25  # how often the live status table is refreshed
# While everyone is blocked, how often the instances' activity is read from /proc (the
# counters only grow, so no progress is missed between two readings).
ACTIVITY_INTERVAL_S = 0.25
STACK_DUMP_WAIT_S = 0.3  # for the stacks of a deadlock to reach the output
RESTART_BURST = 5
RESTART_WINDOW_S = 10.0


class _Stopped(BaseException):
    """Raised in the supervisor by SIGTERM; a BaseException like KeyboardInterrupt."""


@dataclass
class _Handle:
    instance: Instance
    process: BaseProcess
    report: Connection
    started: float
    deadline: float | None
    outcome: InstanceResult = field(default_factory=InstanceResult)


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


class LocalBackend:
    name = "local"

    def run(self, plan: Plan, options: RunOptions, output: OutputSink) -> RunResult:
        return _Supervisor(plan, options, output).run()


class _Supervisor:
    def __init__(self, plan: Plan, options: RunOptions, output: OutputSink) -> None:
        self.plan = plan
        self.options = options
        self.say = output
        self.mp: Any = multiprocessing.get_context(plan.spec.start_method)
        if plan.spec.start_method == "forkserver":
            # The fork server imports these once; every instance forks with them loaded.
            # (It starts on first use, with this process's sys.path, spec folder included.)
            add_to_path(plan.spec_dir)
            modules = sorted({i.target.partition(":")[0] for i in plan.instances})
            self.mp.set_forkserver_preload(["topo.child", *modules])
        self.outcomes: dict[str, InstanceResult] = {
            i.name: InstanceResult() for i in plan.instances
        }
        self.running: dict[str, _Handle] = {}
        self.waiting = list(plan.instances)  # not started yet
        self.retry_at: dict[str, float] = {}  # instance -> when its restart is due
        self.restart_times: dict[str, list[float]] = {}  # instance -> when it restarted
        self.status: Status = "ok"
        self.message: str | None = None
        self.exit_code: int | None = None
        self.pump = OutputPump(self._instance_line)
        self.primitives: Primitives | None = None
        self.slots = {inst.name: slot for slot, inst in enumerate(plan.instances)}
        self.board: Board | None = None
        if options.watch:
            self.board = Board(len(plan.instances), sum(1 for _ in plan.declared()))
        self.next_status = 0.0
        self.stopping = False  # set once teardown begins (or the first signal came)
        self.hurry = False  # a second signal: no more grace period
        self.quiet_since: float | None = None  # when everyone was first seen blocked
        self.quiet_progress = -1.0
        self.activity_due = 0.0  # when the instances' activity is read next
        self.unstarted_pipe_users = {
            name: {inst.name for inst, _ in plan.users_of(name)}
            for name, c in plan.spec.channels.items()
            if c.kind == "pipe"
        }

    # ----- output ---------------------------------------------------------------------------

    def _instance_line(self, name: str, line: str) -> None:
        if self.options.log is not None:
            self.options.log(name, line)
        if not self.options.quiet:
            self.say(name, line)

    def _event(self, kind: str, **fields: Any) -> None:
        if self.options.events is not None:
            self.options.events(kind, **fields)

    # ----- the run --------------------------------------------------------------------------

    def run(self) -> RunResult:
        started = time.monotonic()
        deadline = started + self.plan.spec.timeout if self.plan.spec.timeout else None
        previous = self._install_signal_handlers()
        state: dict[str, Any] = {}
        self.pump.start()
        try:
            try:
                self.primitives = Primitives(self.plan, self.mp)
            except RunError as e:
                self._end("failed", str(e))
                return self._result(started, state)
            try:
                self._supervise(deadline)
            except KeyboardInterrupt:
                self._end("interrupted", "interrupted by Ctrl-C (SIGINT)")
            except _Stopped:
                self._end("interrupted", "stopped by SIGTERM", exit_code=EXIT_SIGTERM)
            finally:
                self._stop_all()
            state = self.primitives.read_state()
        finally:
            self.pump.finish()
            if self.primitives is not None:
                self.primitives.close()
            self._restore_signal_handlers(previous)
        return self._result(started, state)

    def _result(self, started: float, state: dict[str, Any]) -> RunResult:
        return RunResult(
            name=self.plan.name,
            status=self.status,
            seed=self.plan.seed,
            params=dict(self.plan.params),
            run_dir=str(self.options.run_dir) if self.options.run_dir else None,
            duration_s=time.monotonic() - started,
            processes=self.outcomes,
            state=state,
            message=self.message,
            exit_code=self.exit_code,
        )

    def _install_signal_handlers(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_signal(signum: int, frame: Any) -> None:
            # The first signal breaks out of supervision; once topo is stopping, a
            # second one only cuts the grace period short: teardown is never interrupted.
            if self.stopping:
                if not self.hurry:
                    self.hurry = True
                    self.say("", "stopping at once")
                return
            self.stopping = True
            raise KeyboardInterrupt if signum == signal.SIGINT else _Stopped()

        # SIGINT explicitly too: a shell starts background jobs with SIGINT ignored.
        return (
            signal.signal(signal.SIGTERM, on_signal),
            signal.signal(signal.SIGINT, on_signal),
        )

    def _restore_signal_handlers(self, previous: Any) -> None:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])

    def _end(self, status: Status, message: str, exit_code: int | None = None) -> None:
        if self.status == "ok":
            self.status, self.message, self.exit_code = status, message, exit_code
            self._event(status, message=message)

    def _supervise(self, deadline: float | None) -> None:
        while True:
            self._start_ready()
            if not self.running and not self._can_start_more():
                return
            if (
                self.running
                and all(self.plan.process_of(h.instance).daemon for h in self.running.values())
                and not self._can_start_more()
            ):
                return  # only daemons left: the run is over
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                names = ", ".join(sorted(self.running)) or "nothing"
                self._end(
                    "timeout",
                    f"the run's timeout of {self.plan.spec.timeout:g}s passed; "
                    f"still running: {names}",
                )
                return
            for handle in list(self.running.values()):
                if handle.deadline is not None and now >= handle.deadline:
                    self._stop(handle, state="timeout")
                    limit = self.plan.process_of(handle.instance).timeout
                    self._end(
                        "timeout", f"{handle.instance.name} ran past its timeout of {limit:g}s"
                    )
                    return
            timeout = POLL_INTERVAL_S
            if deadline is not None:
                timeout = max(0.0, min(timeout, deadline - now))
            handles = {h.process.sentinel: h for h in self.running.values()}
            reports = {h.report: h for h in self.running.values() if not h.report.closed}
            if not handles:
                time.sleep(timeout)  # only restarts are due
            for ready in wait([*handles, *reports], timeout) if handles else ():
                if ready in reports:
                    self._receive(reports[ready])
            for handle in handles.values():
                if not handle.process.is_alive():
                    self._exited(handle)
                    if self.status != "ok":
                        return
            if self.board is not None and self._deadlocked():
                return
            if self.options.status is not None and now >= self.next_status:
                self.next_status = now + STATUS_INTERVAL_S
                self.options.status(self.status_rows())

    def _can_start_more(self) -> bool:
        return any(self._deps_state(i) != "failed" for i in self.waiting)

    def _deps_state(self, instance: Instance) -> str:
        """'ready', 'waiting' or 'failed' for the processes ``instance`` is after."""
        for dep in self.plan.process_of(instance).after:
            for other in self.plan.instances_of(dep):
                outcome = self.outcomes[other.name]
                if outcome.state in ("failed", "killed", "timeout", "stopped"):
                    return "failed"
                if outcome.state != "exited" or other.name in self.retry_at:
                    return "waiting"
        return "ready"

    def _start_ready(self) -> None:
        now = time.monotonic()
        for inst in list(self.waiting):
            if self._deps_state(inst) != "ready" or self.retry_at.get(inst.name, 0) > now:
                continue
            self.waiting.remove(inst)
            self.retry_at.pop(inst.name, None)
            self._start(inst)

    def _start(self, inst: Instance) -> None:
        assert self.primitives is not None
        process = self.plan.process_of(inst)
        context = RunContext(
            name=inst.name,
            process=inst.process,
            replica=inst.replica,
            replicas=inst.replicas,
            seed=inst.seed,
            params=dict(self.plan.params),
            run_dir=str(self.options.run_dir) if self.options.run_dir else None,
            spec_dir=str(self.plan.spec_dir),
        )
        watching = self.board is not None
        job = Job(
            inst.target,
            inst.args,
            inst.env,
            context,
            self.primitives.bind(inst, watch=watching),
            supervisor_pid=os.getpid(),
            board=self.board,
            slot=self.slots[inst.name],
            sampled=self.primitives.sampled(inst) if watching else None,
        )
        if self.board is not None:
            self.board.reset(self.slots[inst.name])
        report_in, report_out = self.mp.Pipe(duplex=False)
        output_in, output_out = self.mp.Pipe(duplex=False)
        proc = self.mp.Process(
            target=child_main, name=inst.name, args=(job, report_out, output_out)
        )
        with _main_module_hidden():
            proc.start()
        report_out.close()
        output_out.close()
        self.pump.add(inst.name, output_in)
        now = time.monotonic()
        outcome = self.outcomes[inst.name]
        outcome.state, outcome.pid, outcome.exit_code = "running", proc.pid, None
        self._event("restart" if outcome.restarts else "start", instance=inst.name, pid=proc.pid)
        self.running[inst.name] = _Handle(
            inst, proc, report_in, now, now + process.timeout if process.timeout else None, outcome
        )
        self._release_pipe_ends(inst)

    def _release_pipe_ends(self, inst: Instance) -> None:
        # Once every user of a pipe has its end, the parent closes its own copies so that
        # a reader sees EOFError when its writer is gone instead of waiting for ever.
        # Kept open when a user may restart and need its end again.
        assert self.primitives is not None
        for b in inst.bindings:
            users = self.unstarted_pipe_users.get(b.name)
            if users is None:
                continue
            users.discard(inst.name)
            restartable = any(
                self.plan.process_of(i).restart == "on-failure"
                for i, _ in self.plan.users_of(b.name)
            )
            if not users and not restartable:
                for end in self.primitives.pipe_ends(b.name):
                    end.close()
                del self.unstarted_pipe_users[b.name]

    def _receive(self, handle: _Handle) -> None:
        try:
            kind, payload = handle.report.recv()
        except (EOFError, OSError):
            handle.report.close()
            return
        except Exception as e:
            kind, payload = "error", f"its result could not be received: {e}"
        if kind == "result":
            handle.outcome.result = payload
        else:
            handle.outcome.error = payload

    def _exited(self, handle: _Handle) -> None:
        handle.process.join()
        while not handle.report.closed and handle.report.poll():
            self._receive(handle)
        handle.report.close()
        del self.running[handle.instance.name]
        outcome = handle.outcome
        code = handle.process.exitcode
        outcome.exit_code = code
        outcome.duration_s += time.monotonic() - handle.started
        self._event("exit", instance=handle.instance.name, exit_code=code)
        if code == 0:
            outcome.state = "exited"
            return
        outcome.state = "killed" if code is not None and code < 0 else "failed"
        process = self.plan.process_of(handle.instance)
        name = handle.instance.name
        broken = self._broken_by(handle.instance, code)
        if broken:
            self._end("failed", broken)
            return
        if process.restart == "on-failure" and outcome.restarts < process.max_restarts:
            now = time.monotonic()
            recent = [t for t in self.restart_times.get(name, []) if now - t < RESTART_WINDOW_S]
            if len(recent) >= RESTART_BURST:
                self._end(
                    "failed",
                    f"{name} {self._how(code)} and was restarted {len(recent)} "
                    f"times within {RESTART_WINDOW_S:g}s: giving up on a restart storm",
                )
                return
            self.restart_times[name] = [*recent, now]
            outcome.restarts += 1
            delay = min(RESTART_BACKOFF_S * 2 ** (outcome.restarts - 1), RESTART_BACKOFF_MAX_S)
            self.say(
                "",
                f"{name} {self._how(code)}; restart "
                f"{outcome.restarts} of {process.max_restarts} in {delay:g}s",
            )
            self.retry_at[name] = now + delay
            self.waiting.append(handle.instance)
            return
        if process.daemon and not any(
            not self.plan.process_of(h.instance).daemon for h in self.running.values()
        ):
            return
        self._end("failed", f"{handle.instance.name} {self._how(code)}")

    def _broken_by(self, instance: Instance, code: int | None) -> str | None:
        """What the death of ``instance`` breaks for good: a lock it held, a barrier."""
        if self.board is None or self.primitives is None:
            return None
        names = self.primitives.names
        slot = self.slots[instance.name]
        held = [names[p] for p in self.board.owned_by(slot) if self._kind(names[p]) in OWNED_KINDS]
        if held:
            kind = self._kind(held[0])
            return (
                f"{kind} '{held[0]}' was held by {instance.name}, which {self._how(code)}: "
                "it stays locked for ever, so the run cannot go on"
            )
        snapshot = self.board.snapshot()
        for b in instance.bindings:
            if self._kind(b.name) != "barrier":
                continue
            prim = self.primitives.index[b.name]
            waiting = [
                n
                for n, s in self.slots.items()
                if n in self.running and snapshot.blocked(s) == ("wait", prim)
            ]
            if waiting:
                return (
                    f"barrier '{b.name}' lost its party {instance.name}, which "
                    f"{self._how(code)}: {', '.join(waiting)} would wait for ever"
                )
        return None

    def status_rows(self) -> list[InstanceStatus]:
        """Where every instance is: for the live table."""
        snapshot = self.board.snapshot() if self.board is not None else None
        names = self.primitives.names if self.primitives is not None else []
        rows = []
        for inst in self.plan.instances:
            outcome = self.outcomes[inst.name]
            state = outcome.state
            running = inst.name in self.running
            if snapshot is not None and running:
                blocked = snapshot.blocked(self.slots[inst.name])
                if blocked is not None:
                    state = describe(blocked, names)
            if outcome.exit_code is not None and not running:
                state = f"{state} ({outcome.exit_code})"
            cpu = cpu_seconds(outcome.pid) if running and outcome.pid else None
            rows.append(InstanceStatus(inst.name, outcome.pid, state, outcome.restarts, cpu))
        return rows

    # ----- deadlock detection ---------------------------------------------------------------

    def _deadlocked(self) -> bool:
        """Check the board; on a deadlock, explain it, dump stacks and end the run."""
        assert self.board is not None and self.primitives is not None
        snapshot = self.board.snapshot()
        everyone_blocked = bool(self.running) and all(
            snapshot.blocked(self.slots[n]) is not None
            for n, h in self.running.items()
            if not self.plan.process_of(h.instance).daemon
        )
        if not everyone_blocked or self.retry_at:
            self.quiet_since = None
            return False
        now = time.monotonic()
        if self.quiet_since is not None and now < self.activity_due:
            return False
        self.activity_due = now + ACTIVITY_INTERVAL_S
        progress = self._activity()
        if self.quiet_since is None or progress != self.quiet_progress:
            self.quiet_since, self.quiet_progress = now, progress
            return False
        if now - self.quiet_since < QUIET_S:
            return False
        waiters = [
            Waiter(
                inst.name,
                self.slots[inst.name],
                inst.name in self.running,
                self.plan.process_of(inst).daemon,
                self._ended(inst.name),
            )
            for inst in self.plan.instances
        ]
        lines = find_deadlock(waiters, snapshot, self._wakers, self.primitives.names)
        if lines is None:
            return False
        self.say("", "deadlock: every instance is blocked and none can wake another")
        for line in lines:
            self.say("", f"  {line}")
        self._dump_stacks()
        self._end("deadlock", "deadlock: " + "; ".join(lines))
        return True

    def _activity(self) -> float:
        """The running instances' main threads' CPU time and context switches, summed:
        it stands still only if they are all blocked for good (see watch.activity)."""
        total = 0.0
        for handle in self.running.values():
            pid = handle.process.pid
            value = activity(pid) if pid is not None else None
            if value is None:  # no /proc: progress cannot be told from standing still
                return math.nan  # never equal to itself: no deadlock is declared
            total += value
        return total

    def _ended(self, name: str) -> str:
        outcome = self.outcomes[name]
        if outcome.state == "not started":
            return "has not started"
        if outcome.exit_code is None:
            return "is gone"
        return self._how(outcome.exit_code)

    def _wakers(self, prim: int, op: str, waiter: str) -> list[str] | None:
        """The instances that could end ``waiter``'s wait in ``op`` on primitive ``prim``."""
        assert self.primitives is not None
        if prim == EXITING:  # flushing queues at exit: their readers can help
            inst = self.plan.instances[self.slots[waiter]]
            queues = {
                b.name
                for b in inst.bindings
                if "input" not in b.roles and self._kind(b.name) in QUEUE_KINDS
            }
            if not queues:
                return None  # a slow exit for some other reason: not provably stuck
            return sorted(
                {
                    i.name
                    for q in queues
                    for i, b in self.plan.users_of(q)
                    if i.name != waiter and ("input" in b.roles or "use" in b.roles)
                }
            )
        name = self.primitives.names[prim]
        users = [(i.name, b) for i, b in self.plan.users_of(name) if i.name != waiter]
        channel = self.plan.spec.channels.get(name)
        if channel is None or channel.kind == "pipe":
            if channel is not None and not getattr(channel, "duplex", True):
                role = "output" if op in ("recv", "poll") else "input"
                return [n for n, b in users if role in b.roles]
            return [n for n, _ in users]  # locks and duplex pipes: every other user
        role = {"get": "output", "put": "input", "join": "input"}.get(op, "output")
        return [n for n, b in users if role in b.roles or "use" in b.roles]

    def _kind(self, name: str) -> str | None:
        model = self.plan.model(name)
        return model.kind if model is not None else None

    def _dump_stacks(self) -> None:
        """Ask each blocked instance for its Python stack (faulthandler, on SIGUSR1)."""
        for handle in self.running.values():
            if handle.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(handle.process.pid, signal.SIGUSR1)
        time.sleep(STACK_DUMP_WAIT_S)

    @staticmethod
    def _how(code: int | None) -> str:
        if code is not None and code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with code {code}"

    # ----- stopping -------------------------------------------------------------------------

    def _stop(self, handle: _Handle, state: str = "stopped") -> None:
        self._stop_handles([handle], state)

    def _stop_all(self) -> None:
        self.stopping = True
        self._stop_handles(list(self.running.values()), "stopped")
        for inst in self.waiting:
            self.outcomes[inst.name].state = (
                "failed" if self.outcomes[inst.name].exit_code else "not started"
            )

    def _stop_handles(self, handles: list[_Handle], state: str) -> None:
        """SIGTERM, a grace period, then SIGKILL; collect what each one returned."""
        for h in handles:
            if h.process.is_alive():
                h.process.terminate()
        end = time.monotonic() + GRACE_PERIOD_S
        while not self.hurry and time.monotonic() < end:
            alive = [h.process.sentinel for h in handles if h.process.is_alive()]
            if not alive:
                break
            wait(alive, min(POLL_INTERVAL_S, max(0.0, end - time.monotonic())))
        for h in handles:
            if h.process.is_alive():
                h.process.kill()
                h.process.join()
        for h in handles:
            was_running = h.instance.name in self.running
            self._exited_quietly(h)
            if was_running and h.outcome.exit_code != 0:
                h.outcome.state = state

    def _exited_quietly(self, handle: _Handle) -> None:
        while not handle.report.closed and handle.report.poll():
            self._receive(handle)
        handle.report.close()
        self.running.pop(handle.instance.name, None)
        handle.outcome.exit_code = handle.process.exitcode
        handle.outcome.duration_s += time.monotonic() - handle.started
        self._event("exit", instance=handle.instance.name, exit_code=handle.outcome.exit_code)
        if handle.outcome.exit_code == 0:
            handle.outcome.state = "exited"
