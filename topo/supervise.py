"""The supervisor: every policy of a run, over any backend's launcher.

The supervisor decides; a ``Launcher`` carries out. The supervisor starts instances
when the processes they are ``after`` have all exited 0, restarts failed ones with
backoff until a restart storm, enforces the run's and each process's timeout, lets
daemons be, turns SIGINT and SIGTERM into an orderly stop, declares deadlocks, and
stops everything at the end (terminate, a grace period, kill), keeping whatever was
returned so far. It never touches a process or a multiprocessing object: tests drive
it with a fake launcher that replays event histories (tests/test_supervise.py).
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from topo.deadlock import QUIET_S, Wait, Waiter, find_deadlock, wakers_in
from topo.errors import PlacementError, RunError, os_error_text
from topo.resolve import Instance, Plan, attempt_seed
from topo.result import EXIT_SIGTERM, InstanceResult, RunResult, State, Status
from topo.timeline import Timeline

GRACE_PERIOD_S = 3.0  # between terminate and kill when topo stops an instance
POLL_INTERVAL_S = 0.1  # longest wait for events between two checks
RESTART_BACKOFF_S = 0.1  # first restart delay; doubles with each restart...
RESTART_BACKOFF_MAX_S = 5.0  # ...up to this
# A restart storm gives up, as systemd's StartLimitBurst/StartLimitIntervalSec do:
# more than RESTART_BURST restarts of one instance within RESTART_WINDOW_S fail the run.
RESTART_BURST = 5
RESTART_WINDOW_S = 10.0
STATUS_INTERVAL_S = 0.25  # how often the live status table is refreshed
START_BATCH = 32  # instances started together, between two looks at the signals
SAMPLE_S = 0.05  # the timeline's finest grain (the supervisor loops every POLL_INTERVAL_S)
# While everyone is blocked, how often the launcher is asked for progress (its counters
# only grow, so no progress is missed between two readings).
PROGRESS_INTERVAL_S = 0.25

# Human-facing output: (instance name, one line of text), or ("", topo's own text), which
# holds several lines when topo says what happened in one step (hundreds of starts).
OutputSink = Callable[[str, str], None]
# Run events for the record: (kind, **fields), e.g. ("exit", instance="w[0]", exit_code=0).
EventSink = Callable[..., None]


# ----- what a launcher reports --------------------------------------------------------------


class Returned(NamedTuple):
    """The instance's target returned ``value`` (comes before its ``Exited``)."""

    name: str
    value: Any


class Raised(NamedTuple):
    """The instance's target raised; ``error`` is the traceback (before its ``Exited``)."""

    name: str
    error: str


class Exited(NamedTuple):
    """The instance is gone. ``code`` is its exit code, negative for a signal."""

    name: str
    code: int | None


Event = Returned | Raised | Exited


class StartFailed(Exception):
    """``start_many`` started its first ``len(pids)`` instances, then ``error`` stopped it:
    those run and are the supervisor's to stop; the others did not start."""

    def __init__(self, pids: list[int | None], error: BaseException) -> None:
        super().__init__(str(error))
        self.pids = pids
        self.error = error


class Launcher(Protocol):
    """What a backend carries out for the supervisor; instances are named by
    ``Instance.name``."""

    def open(self, output: OutputSink) -> None:
        """Build every channel and lock, and send every line the instances print to
        ``output`` from now on; raise ``RunError`` if that fails."""

    def start_many(self, starts: Sequence[tuple[Instance, int]]) -> list[int | None]:
        """Start (or restart: attempt > 0) each (instance, attempt) with its bound
        primitives, in order; their pids where there are pids. An instance's context is
        ``plan.context(instance, run_dir, attempt)``. A launcher may make what they all
        need first and start them one after the other; failing after starting some, it
        raises ``StartFailed`` with their pids."""

    def wait(self, timeout: float) -> list[Event]:
        """The events that came within ``timeout`` seconds (at least one, or none when
        the time is up). A launcher reports every ``Exited`` exactly once, after the
        ``Returned`` or ``Raised`` of the same instance."""

    def terminate(self, name: str) -> None:
        """Ask a running instance to stop (SIGTERM)."""

    def kill(self, name: str) -> None:
        """Stop a running instance now; its ``Exited`` follows soon."""

    def waits(self) -> dict[str, Wait]:
        """Who waits for what right now, among running instances (empty: unknown)."""

    def holders(self) -> dict[str, str]:
        """Lock name -> the instance holding it (also after that instance died)."""

    def progress(self) -> float:
        """A measure of the running instances' activity that grows whenever any of them
        makes progress; NaN when it cannot be told (then no deadlock is declared)."""

    def cpu_seconds(self, name: str) -> float | None:
        """CPU time the running instance has used so far, None when unknown."""

    def depths(self) -> dict[str, int]:
        """How many items wait in each queue now (for the timeline; empty: unknown)."""

    def dump_stacks(self) -> None:
        """Have every running instance print its stack (to explain a deadlock)."""

    def drain(self) -> dict[str, list[Any]]:
        """Once every instance has stopped: the messages still in each channel (bounded
        in count and time, never waiting on a lock a stopped instance held)."""

    def read_state(self) -> dict[str, Any]:
        """The final contents of every state channel, as JSON-able data."""

    def close(self) -> None:
        """Free everything ``open`` built; safe to call after a failed ``open``."""


# ----- what the supervisor reports ----------------------------------------------------------


@dataclass(frozen=True)
class InstanceStatus:
    """One row of the live status table."""

    name: str
    pid: int | None
    state: State
    detail: str | None  # what a running instance is blocked in, e.g. "blocked in get() on 'q'"
    exit_code: int | None
    restarts: int
    cpu_s: float | None  # CPU time used so far, None when unknown
    up_s: float | None = None  # how long the running instance has run
    running_share: float | None = None  # share of its life so far not blocked (timeline)

    @property
    def label(self) -> str:
        """The state for humans: ``blocked in get() on 'q'``, ``failed (1)``..."""
        if self.detail is not None:
            return self.detail
        if self.exit_code is not None and self.state.ended:
            return f"{self.state} ({self.exit_code})"
        return str(self.state)


class StatusBoard(list[InstanceStatus]):
    """What the live status shows: a row per instance (it is the list of them), and
    the run's elapsed time and each queue's depth."""

    def __init__(
        self,
        rows: list[InstanceStatus],
        elapsed_s: float = 0.0,
        depths: dict[str, int] | None = None,
    ) -> None:
        super().__init__(rows)
        self.elapsed_s = elapsed_s
        self.depths = depths or {}


StatusSink = Callable[[list[InstanceStatus]], None]  # given a StatusBoard


@dataclass(frozen=True)
class RunOptions:
    run_dir: Path | None = None  # where instance logs go; None: not recorded
    quiet: bool = False  # hide the instances' own output on the terminal
    lifecycle: bool = False  # say each start and end of an instance, as it happens (a pipe)
    watch: bool = True  # instrument channels and locks for run-time deadlock detection
    trace: bool = True  # keep the timeline: trace.json, channel flow, shares, bottleneck
    status: StatusSink | None = None  # called about every STATUS_INTERVAL_S while running
    log: OutputSink | None = None  # every line of every instance, even with quiet
    events: EventSink | None = None


def _feeders(plan: Plan) -> dict[str, dict[str, list[str]]]:
    """Channel -> the processes that write it and those that read it."""
    out: dict[str, dict[str, list[str]]] = {}
    for inst in plan.instances:
        for b in inst.bindings:
            sides = out.setdefault(b.name, {"writers": [], "readers": []})
            for side, yes in (("writers", b.writes), ("readers", b.reads)):
                if yes and inst.process not in sides[side]:
                    sides[side].append(inst.process)
    return out


class _Stopped(BaseException):
    """SIGTERM came: a BaseException like KeyboardInterrupt for SIGINT."""


def how(code: int | None) -> str:
    """``exited with code 1``, ``was killed by SIGKILL``."""
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class _Running:
    instance: Instance
    started: float
    deadline: float | None


@dataclass
class Supervisor:
    """Runs one Plan to its end through ``launcher``; see the module's docstring."""

    plan: Plan
    launcher: Launcher
    options: RunOptions = field(default_factory=RunOptions)
    say: OutputSink = lambda name, line: None  # topo's own lines for humans
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.outcomes = {i.name: InstanceResult() for i in self.plan.instances}
        self.running: dict[str, _Running] = {}
        self.waiting = list(self.plan.instances)  # not started yet
        self.retry_at: dict[str, float] = {}  # instance -> when its restart is due
        self.restart_times: dict[str, list[float]] = {}  # instance -> when it restarted
        self.pending: deque[Event] = deque()  # received, not handled yet
        self.status: Status = "ok"
        self.message: str | None = None
        self.exit_code: int | None = None
        self.stopping = False  # set once teardown begins (or the first signal came)
        self.hurry = False  # a second signal: no more grace period
        self.signalled: int | None = None  # the first SIGINT or SIGTERM, until acted on
        self.next_status = 0.0
        self.quiet_since: float | None = None  # when everyone was first seen blocked
        self.quiet_progress = -1.0
        self.progress_due = 0.0
        self.wakers = wakers_in(self.plan)
        self.timeline = Timeline(
            kinds={name: model.kind for _, name, model in self.plan.declared()},
            process_of={i.name: i.process for i in self.plan.instances},
            feeders=_feeders(self.plan),
        )
        self.next_sample = 0.0
        self.announced: list[str] = []  # starts and ends not said yet (see _announce)

    def _announce(self, line: str) -> None:
        """Say a start or an end with the others of the same step, in one go: one write
        for 256 starts instead of 256, each of which woke the reader of topo's stderr."""
        self.announced.append(line)

    def _tell(self, line: str) -> None:
        """Say one of topo's own lines, after the starts and ends announced before it."""
        self._flush_announced()
        self.say("", line)

    def _flush_announced(self) -> None:
        if self.announced:
            lines, self.announced = self.announced, []
            self.say("", "\n".join(lines))

    def instance_line(self, name: str, line: str) -> None:
        """Where a launcher sends each line an instance prints."""
        if self.options.log is not None:
            self.options.log(name, line)
        if not self.options.quiet:
            self.say(name, line)

    def _event(self, kind: str, **fields: Any) -> None:
        self.timeline.instant(self.clock(), kind, fields.get("instance"))
        if self.options.events is not None:
            self.options.events(kind, **fields)

    # ----- the run --------------------------------------------------------------------------

    def run(self) -> RunResult:
        started = self.clock()
        self.timeline.origin = started
        deadline = started + self.plan.spec.timeout if self.plan.spec.timeout else None
        previous = self._install_signal_handlers()
        state: dict[str, Any] = {}
        leftovers: dict[str, list[Any]] = {}
        try:
            try:
                self.launcher.open(self.instance_line)
            except PlacementError as e:  # nothing can start: as for a spec that cannot run
                self._end("invalid", str(e))
                return self._result(started, state, leftovers)
            except RunError as e:
                self._end("failed", str(e))
                return self._result(started, state, leftovers)
            try:
                self._supervise(deadline)
            except RunError as e:  # the backend lost what the run needs (a Ray node...)
                self._end("failed", str(e))
            except KeyboardInterrupt:
                self._end("interrupted", "interrupted by Ctrl-C (SIGINT)")
            except _Stopped:
                self._end("interrupted", "stopped by SIGTERM", exit_code=EXIT_SIGTERM)
            finally:
                self._stop_all()
                self._flush_announced()
                self.timeline.finish(self.clock())
            leftovers = self.launcher.drain()
            state = self.launcher.read_state()
        finally:
            self.launcher.close()
            self._restore_signal_handlers(previous)
        if leftovers:
            counts = ", ".join(f"{len(v)} in '{k}'" for k, v in leftovers.items())
            self._tell(f"undelivered: {counts}")
        result = self._result(started, state, leftovers)
        if result.bottleneck is not None:
            self._tell(f"bottleneck: {result.bottleneck['reason']}")
        return result

    def _result(
        self, started: float, state: dict[str, Any], leftovers: dict[str, list[Any]]
    ) -> RunResult:
        return RunResult(
            name=self.plan.name,
            status=self.status,
            seed=self.plan.seed,
            params=dict(self.plan.params),
            run_dir=str(self.options.run_dir) if self.options.run_dir else None,
            duration_s=self.clock() - started,
            processes=self.outcomes,
            state=state,
            message=self.message,
            exit_code=self.exit_code,
            undelivered={name: len(items) for name, items in leftovers.items()},
            leftovers=leftovers,
            **(self._timeline_results() if self.options.trace else {}),
        )

    def _timeline_results(self) -> dict[str, Any]:
        return {
            "channels": self.timeline.channels(),
            "bottleneck": self.timeline.bottleneck() if self.status != "invalid" else None,
            "shares": self.timeline.shares(),
            "trace": self.timeline.trace(),
        }

    def _install_signal_handlers(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_signal(signum: int, frame: Any) -> None:
            # The first signal ends supervision at its next step (within POLL_INTERVAL_S):
            # raising here could land anywhere, in a fork hook or half-way through reaping
            # an instance. Once topo is stopping, a second one only cuts the grace period
            # short: teardown is never interrupted. Nothing is said from here: the main
            # thread may be inside say() itself, holding the output's lock.
            if self.stopping:
                self.hurry = True
                return
            self.stopping = True
            self.signalled = signum

        # SIGINT explicitly too: a shell starts background jobs with SIGINT ignored.
        return (
            signal.signal(signal.SIGTERM, on_signal),
            signal.signal(signal.SIGINT, on_signal),
        )

    @staticmethod
    def _restore_signal_handlers(previous: Any) -> None:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])

    def _check_signals(self) -> None:
        """Act on a signal that came: end supervision as Ctrl-C or SIGTERM does."""
        if self.signalled is not None:
            raise KeyboardInterrupt if self.signalled == signal.SIGINT else _Stopped()

    def _end(self, status: Status, message: str, exit_code: int | None = None) -> None:
        """The first verdict other than ok is the run's."""
        if self.status == "ok":
            self.status, self.message, self.exit_code = status, message, exit_code
            self._event(status, message=message)

    def _daemon(self, name: str) -> bool:
        return self.plan.process_of(self.running[name].instance).daemon

    def _supervise(self, deadline: float | None) -> None:
        while True:
            self._check_signals()
            self._start_ready()
            if not self.running and not self._can_start_more():
                return
            if all(self._daemon(n) for n in self.running) and not self._can_start_more():
                return  # only daemons left: the run is over
            now = self.clock()
            if deadline is not None and now >= deadline:
                names = ", ".join(sorted(self.running)) or "nothing"
                self._end(
                    "timeout",
                    f"the run's timeout of {self.plan.spec.timeout:g}s passed; "
                    f"still running: {names}",
                )
                return
            for name, run in list(self.running.items()):
                if run.deadline is not None and now >= run.deadline:
                    self._stop([name], State.TIMEOUT)
                    limit = self.plan.process_of(run.instance).timeout
                    self._end("timeout", f"{name} ran past its timeout of {limit:g}s")
                    return
            timeout = POLL_INTERVAL_S
            if deadline is not None:
                timeout = max(0.0, min(timeout, deadline - now))
            if not self.pending:
                self._flush_announced()  # the starts of this step, before waiting
                self.pending.extend(self.launcher.wait(timeout))
            self._check_signals()
            while self.pending:
                self._handle(self.pending.popleft())
                if self.status != "ok":
                    return
            waits = self._sample(now)
            if self.options.watch and self._deadlocked(waits):
                return
            if self.options.status is not None and now >= self.next_status:
                self.next_status = now + STATUS_INTERVAL_S
                self.options.status(self.status_rows())

    def _handle(self, event: Event, stopped_as: State | None = None) -> None:
        """Take one event in; ``stopped_as`` while topo is stopping the instance."""
        outcome = self.outcomes[event.name]
        if isinstance(event, Returned):
            outcome.result = event.value
        elif isinstance(event, Raised):
            outcome.error = event.error
        elif event.name in self.running:
            self._exited(event.name, event.code, stopped_as)

    # ----- starting -------------------------------------------------------------------------

    def _can_start_more(self) -> bool:
        return any(self._deps_state(i) != "failed" for i in self.waiting)

    def _deps_state(self, instance: Instance) -> str:
        """'ready', 'waiting' or 'failed' for the processes ``instance`` is after."""
        for dep in self.plan.process_of(instance).after:
            for other in self.plan.instances_of(dep):
                state = self.outcomes[other.name].state
                if state in (State.FAILED, State.KILLED, State.TIMEOUT, State.STOPPED):
                    return "failed"
                if state != State.EXITED or other.name in self.retry_at:
                    return "waiting"
        return "ready"

    def _start_ready(self) -> None:
        now = self.clock()
        ready = [
            inst
            for inst in self.waiting
            if self._deps_state(inst) == "ready" and self.retry_at.get(inst.name, 0) <= now
        ]
        for at in range(0, len(ready), START_BATCH):
            self._check_signals()  # thousands of instances take a while to start
            batch = ready[at : at + START_BATCH]
            chosen = {id(inst) for inst in batch}
            self.waiting = [inst for inst in self.waiting if id(inst) not in chosen]
            for inst in batch:
                self.retry_at.pop(inst.name, None)
            starts = [(inst, self.outcomes[inst.name].restarts) for inst in batch]
            try:
                pids = self.launcher.start_many(starts)
            except StartFailed as e:  # those started are running: noted, then stopped
                for inst, pid in zip(batch, e.pids, strict=False):
                    self._started(inst, pid)
                self.waiting.extend(batch[len(e.pids) :])
                if not isinstance(e.error, Exception):
                    raise e.error from None  # a signal's, handled as signals are
                error = e.error
                why = os_error_text(error) if isinstance(error, OSError) else str(error)
                # The run fails with what each instance did: its result says who ran.
                raise RunError(f"{batch[len(e.pids)].name} could not start: {why}") from error
            for inst, pid in zip(batch, pids, strict=True):
                self._started(inst, pid)
            self._flush_announced()  # said before the next batch's instances can print

    def _started(self, inst: Instance, pid: int | None) -> None:
        outcome = self.outcomes[inst.name]
        now = self.clock()
        outcome.state, outcome.pid, outcome.exit_code = State.RUNNING, pid, None
        seed = attempt_seed(inst.seed, outcome.restarts)
        outcome.seeds.append(seed)
        kind = "restart" if outcome.restarts else "start"
        self._event(kind, instance=inst.name, pid=pid, seed=seed)
        if self.options.lifecycle:
            self._announce(f"{inst.name} running" + (f" (pid {pid})" if pid is not None else ""))
        timeout = self.plan.process_of(inst).timeout
        self.running[inst.name] = _Running(inst, now, now + timeout if timeout else None)

    # ----- exits ----------------------------------------------------------------------------

    def _exited(self, name: str, code: int | None, stopped_as: State | None = None) -> None:
        """Reap an instance; unless topo is stopping it, decide what its exit means."""
        run = self.running.pop(name)
        outcome = self.outcomes[name]
        outcome.exit_code = code
        outcome.duration_s += self.clock() - run.started
        self._event("exit", instance=name, exit_code=code)
        if code == 0:
            outcome.state = State.EXITED
        elif stopped_as is not None:
            outcome.state = stopped_as
        else:
            outcome.state = State.KILLED if code is not None and code < 0 else State.FAILED
        process = self.plan.process_of(run.instance)
        restarting = (
            outcome.state in (State.KILLED, State.FAILED)
            and process.restart == "on-failure"
            and outcome.restarts < process.max_restarts
        )
        if self.options.lifecycle and not restarting:  # a restart says so itself
            self._announce(f"{name} {outcome.state} ({code})")
        if code == 0 or stopped_as is not None:  # returned, or topo stopped it
            return
        broken = self._broken_by(name, code)
        if broken:
            self._end("failed", broken)
            return
        if restarting:
            self._restart(run.instance, code)
            return
        if process.daemon and all(self._daemon(n) for n in self.running):
            return
        self._end("failed", f"{name} {how(code)}")

    def _restart(self, instance: Instance, code: int | None) -> None:
        name = instance.name
        process = self.plan.process_of(instance)
        outcome = self.outcomes[name]
        now = self.clock()
        recent = [t for t in self.restart_times.get(name, []) if now - t < RESTART_WINDOW_S]
        if len(recent) >= RESTART_BURST:
            self._end(
                "failed",
                f"{name} {how(code)} and was restarted {len(recent)} "
                f"times within {RESTART_WINDOW_S:g}s: giving up on a restart storm",
            )
            return
        self.restart_times[name] = [*recent, now]
        outcome.restarts += 1
        delay = min(RESTART_BACKOFF_S * 2 ** (outcome.restarts - 1), RESTART_BACKOFF_MAX_S)
        self._tell(
            f"{name} {how(code)}; restart {outcome.restarts} of {process.max_restarts} "
            f"in {delay:g}s"
        )
        self.retry_at[name] = now + delay
        self.waiting.append(instance)

    def _broken_by(self, name: str, code: int | None) -> str | None:
        """What the death of instance ``name`` breaks for good: a lock it held, a barrier."""
        if not self.options.watch:
            return None
        held = [
            lock
            for lock, holder in self.launcher.holders().items()
            if holder == name and self.plan.model(lock).traits.owned
        ]
        if held:
            kind = self.plan.model(held[0]).kind
            return (
                f"{kind} '{held[0]}' was held by {name}, which {how(code)}: "
                "it stays locked for ever, so the run cannot go on"
            )
        instance = next(i for i in self.plan.instances if i.name == name)
        waits = self.launcher.waits()
        for b in instance.bindings:
            if self.plan.model(b.name).kind != "barrier":
                continue
            waiting = [n for n in self.running if waits.get(n) == Wait("wait", b.name)]
            if waiting:
                return (
                    f"barrier '{b.name}' lost its party {name}, which "
                    f"{how(code)}: {', '.join(waiting)} would wait for ever"
                )
        return None

    def status_rows(self) -> StatusBoard:
        """Where every instance is, how long the run has gone, the queues' depths."""
        waits = self.launcher.waits() if self.options.watch else {}
        now = self.clock()
        shares = self.timeline.shares(now) if self.options.trace else {}
        rows = []
        for inst in self.plan.instances:
            outcome = self.outcomes[inst.name]
            running = inst.name in self.running
            wait = waits.get(inst.name) if running else None
            rows.append(
                InstanceStatus(
                    inst.name,
                    outcome.pid,
                    outcome.state,
                    str(wait) if wait is not None else None,
                    outcome.exit_code,
                    outcome.restarts,
                    self.launcher.cpu_seconds(inst.name) if running else None,
                    now - self.running[inst.name].started if running else None,
                    shares.get(inst.name, {}).get("running"),
                )
            )
        depths = self.timeline.current_depths() if self.options.trace else {}
        return StatusBoard(rows, now - self.timeline.origin, depths)

    # ----- deadlock detection ---------------------------------------------------------------

    def _sample(self, now: float) -> dict[str, Wait]:
        """Who waits for what now (also for the timeline, every SAMPLE_S at most)."""
        waits = self.launcher.waits() if self.options.watch else {}
        if self.options.trace and now >= self.next_sample:
            self.next_sample = now + SAMPLE_S
            self.timeline.observe(now, self.running, waits, self.launcher.depths())
        return waits

    def _deadlocked(self, waits: dict[str, Wait] | None = None) -> bool:
        """Given who waits for what, on a deadlock, explain it and end the run."""
        if waits is None:
            waits = self.launcher.waits()
        everyone_blocked = bool(self.running) and all(
            n in waits for n in self.running if not self._daemon(n)
        )
        if not everyone_blocked or self.retry_at:
            self.quiet_since = None
            return False
        now = self.clock()
        if self.quiet_since is not None and now < self.progress_due:
            return False
        self.progress_due = now + PROGRESS_INTERVAL_S
        progress = self.launcher.progress()
        if self.quiet_since is None or progress != self.quiet_progress:
            self.quiet_since, self.quiet_progress = now, progress
            return False
        if now - self.quiet_since < QUIET_S:
            return False
        waiters = [
            Waiter(
                inst.name,
                inst.name in self.running,
                self.plan.process_of(inst).daemon,
                self._ended(inst.name),
            )
            for inst in self.plan.instances
        ]
        lines = find_deadlock(waiters, waits, self.launcher.holders(), self.wakers)
        if lines is None:
            return False
        self._tell("deadlock: every instance is blocked and none can wake another")
        for line in lines:
            self._tell(f"  {line}")
        self.launcher.dump_stacks()
        self._end("deadlock", "deadlock: " + "; ".join(lines))
        return True

    def _ended(self, name: str) -> str:
        outcome = self.outcomes[name]
        if outcome.state == State.NOT_STARTED:
            return "has not started"
        if outcome.exit_code is None:
            return "is gone"
        return how(outcome.exit_code)

    # ----- stopping -------------------------------------------------------------------------

    def _stop_all(self) -> None:
        self.stopping = True
        while self.pending:  # exits already reported: not topo's doing
            self._handle(self.pending.popleft(), State.STOPPED)
        self._stop(list(self.running), State.STOPPED)
        for inst in self.waiting:
            outcome = self.outcomes[inst.name]
            outcome.state = State.FAILED if outcome.exit_code else State.NOT_STARTED

    def _stop(self, names: list[str], state: State) -> None:
        """Terminate, a grace period, then kill; collect what each one returned.

        Other instances' events that come meanwhile are kept for the main loop."""
        targets = set(names)

        def collect(timeout: float) -> None:
            self._flush_announced()
            for event in self.launcher.wait(timeout):
                if event.name in targets:
                    self._handle(event, state)
                    if isinstance(event, Exited):
                        targets.discard(event.name)
                else:
                    self.pending.append(event)

        for name in names:
            self.launcher.terminate(name)
        end = self.clock() + GRACE_PERIOD_S
        while targets and not self.hurry and self.clock() < end:
            collect(max(0.0, min(POLL_INTERVAL_S, end - self.clock())))
        if targets and self.hurry:
            self._tell("stopping at once")
        for name in targets:
            self.launcher.kill(name)
        while targets:
            collect(POLL_INTERVAL_S)


__all__ = [
    "GRACE_PERIOD_S",
    "Event",
    "Exited",
    "InstanceStatus",
    "Launcher",
    "OutputSink",
    "Raised",
    "Returned",
    "RunOptions",
    "StartFailed",
    "StatusBoard",
    "StatusSink",
    "Supervisor",
    "how",
]
