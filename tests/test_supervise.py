"""The supervisor's policy, without processes: a fake launcher replays what instances do.

Time is the fake launcher's: ``wait`` jumps to the next scripted event, so a test of a
10-second restart window takes milliseconds, and every time asserted is exact up to
the supervisor's poll interval.
"""

from __future__ import annotations

import itertools
import re
import signal
import textwrap
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import topo
from topo.deadlock import QUIET_S, Wait
from topo.resolve import Instance, Plan
from topo.result import State
from topo.supervise import (
    GRACE_PERIOD_S,
    POLL_INTERVAL_S,
    RESTART_BURST,
    START_BATCH,
    Event,
    Exited,
    OutputSink,
    Returned,
    RunOptions,
    Supervisor,
    _Stopped,
)

TICK = POLL_INTERVAL_S + 1e-9  # how late the supervisor may notice a due time


@dataclass
class Attempt:
    """What one start of an instance does: after ``after`` seconds it returns ``value``
    and exits with ``code``; with ``after=None`` it runs until it is stopped."""

    after: float | None = None
    code: int = 0
    value: Any = None
    stubborn: bool = False  # ignores terminate: only kill ends it
    waits: Wait | None = None  # blocked in this while it runs


FOREVER = Attempt()


@dataclass
class FakeLauncher:
    scripts: dict[str, list[Attempt]]  # instance -> its attempts (the last one repeats)
    interrupt_at: float | None = None
    interrupt: type[BaseException] = KeyboardInterrupt
    held: dict[str, str] = field(default_factory=dict)
    now: float = 0.0
    log: list[tuple[float, str, str]] = field(default_factory=list)  # (time, action, instance)
    due: dict[str, tuple[float, int, Any]] = field(default_factory=dict)
    running: dict[str, Attempt] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)
    batches: list[list[str]] = field(default_factory=list)  # the names of each start_many
    closed: bool = False
    left: dict[str, list[Any]] = field(default_factory=dict)  # what drain() finds

    def clock(self) -> float:
        return self.now

    def open(self, output: OutputSink) -> None:
        self.output = output

    def start_many(self, starts: Sequence[tuple[Instance, int]]) -> list[int | None]:
        self.batches.append([instance.name for instance, _ in starts])
        return [self._start(instance, attempt) for instance, attempt in starts]

    def _start(self, instance: Instance, attempt: int) -> int | None:
        name = instance.name
        n = self.starts.get(name, 0)
        assert attempt == n, "the supervisor numbers each start of an instance"
        self.starts[name] = n + 1
        attempts = self.scripts.get(name, [FOREVER])
        attempt = attempts[min(n, len(attempts) - 1)]
        self.running[name] = attempt
        if attempt.after is not None:
            self.due[name] = (self.now + attempt.after, attempt.code, attempt.value)
        self.log.append((self.now, "start", name))
        return 1000 + len(self.log)

    def wait(self, timeout: float) -> list[Event]:
        until = self.now + timeout
        if self.interrupt_at is not None and until >= self.interrupt_at:
            self.now, self.interrupt_at = max(self.now, self.interrupt_at), None
            raise self.interrupt()
        soonest = min((t for t, _, _ in self.due.values()), default=None)
        if soonest is None or soonest > until:
            self.now = until
            return []
        self.now = max(self.now, soonest)
        events: list[Event] = []
        for name, (t, code, value) in list(self.due.items()):
            if t <= self.now:
                del self.due[name], self.running[name]
                if code == 0:
                    events.append(Returned(name, value))
                events.append(Exited(name, code))
        return events

    def terminate(self, name: str) -> None:
        self.log.append((self.now, "terminate", name))
        if not self.running[name].stubborn:
            self.due[name] = (self.now + 0.05, -15, None)

    def kill(self, name: str) -> None:
        self.log.append((self.now, "kill", name))
        self.due[name] = (self.now, -9, None)

    def waits(self) -> dict[str, Wait]:
        return {n: a.waits for n, a in self.running.items() if a.waits is not None}

    def holders(self) -> dict[str, str]:
        return self.held

    def progress(self) -> float:
        return 0.0  # nothing moves: only the waits tell whether instances are stuck

    def depths(self) -> dict[str, int]:
        return {}

    def cpu_seconds(self, name: str) -> float | None:
        return None

    def dump_stacks(self) -> None:
        self.log.append((self.now, "dump_stacks", ""))

    def drain(self) -> dict[str, list[Any]]:
        return self.left

    def read_state(self) -> dict[str, Any]:
        return {"total": 42}

    def close(self) -> None:
        self.closed = True

    def actions(self, action: str) -> list[tuple[float, str]]:
        return [(t, n) for t, a, n in self.log if a == action]


def plan_of(tmp_path: Path, body: str) -> Plan:
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(body))
    return topo.load(path, seed=1)


def supervise(plan: Plan, launcher: FakeLauncher, **options: Any) -> tuple[Any, list[str]]:
    said: list[str] = []
    events: list[tuple[str, dict[str, Any]]] = []
    opts = RunOptions(events=lambda kind, **f: events.append((kind, f)), **options)
    supervisor = Supervisor(
        plan, launcher, opts, lambda name, line: said.append(line), clock=launcher.clock
    )
    result = supervisor.run()
    assert launcher.closed, "the launcher is always closed"
    assert not launcher.running, "nothing is left running"
    return result, said


TWO = """
processes:
  a: {target: "m:f"}
  b: {target: "m:f"}
"""


def test_all_exit_0_is_ok_with_results_and_final_state(tmp_path: Path) -> None:
    launcher = FakeLauncher({"a": [Attempt(0.5, 0, "A")], "b": [Attempt(1.0, 0, "B")]})
    result, _ = supervise(plan_of(tmp_path, TWO), launcher)
    assert (result.status, result.exit_code) == ("ok", 0)
    assert {n: (r.state, r.result) for n, r in result.processes.items()} == {
        "a": (State.EXITED, "A"),
        "b": (State.EXITED, "B"),
    }
    assert result.state == {"total": 42}
    assert launcher.actions("terminate") == []


def test_a_failure_stops_the_others_and_keeps_what_they_returned(tmp_path: Path) -> None:
    launcher = FakeLauncher({"a": [Attempt(0.5, 1)], "b": [FOREVER]})
    result, _ = supervise(plan_of(tmp_path, TWO), launcher)
    assert (result.status, result.exit_code) == ("failed", 1)
    assert result.message == "a exited with code 1"
    assert result.processes["a"].state == State.FAILED
    assert result.processes["b"].state == State.STOPPED
    assert launcher.actions("terminate") == [(pytest.approx(0.5, abs=TICK), "b")]
    assert launcher.actions("kill") == []


def test_a_stubborn_instance_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    launcher = FakeLauncher({"a": [Attempt(0.5, 1)], "b": [Attempt(stubborn=True)]})
    result, _ = supervise(plan_of(tmp_path, TWO), launcher)
    (t_term, _), (t_kill, _) = launcher.actions("terminate")[0], launcher.actions("kill")[0]
    assert t_kill - t_term == pytest.approx(GRACE_PERIOD_S, abs=TICK)
    assert result.processes["b"].state == State.STOPPED
    assert result.processes["b"].exit_code == -9


def test_restarts_back_off_and_a_storm_gives_up(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        """
        processes:
          flaky: {target: "m:f", restart: on-failure, max_restarts: 20}
        """,
    )
    launcher = FakeLauncher({"flaky": [Attempt(0.0, 1)]})
    result, said = supervise(plan, launcher)
    starts = [t for t, _ in launcher.actions("start")]
    assert len(starts) == RESTART_BURST + 1
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    for n, gap in enumerate(gaps):  # 0.1 s, doubling
        assert gap == pytest.approx(0.1 * 2**n, abs=TICK)
    assert result.status == "failed"
    assert "giving up on a restart storm" in (result.message or "")
    assert result.processes["flaky"].restarts == RESTART_BURST
    assert said[0] == "flaky exited with code 1; restart 1 of 20 in 0.1s"


def test_ready_instances_are_started_in_batches(tmp_path: Path) -> None:
    # A launcher makes what a batch needs, then starts it: under fork, the work between
    # two forks is what costs (every page written again is copied again).
    plan = plan_of(tmp_path, "processes:\n  w: {target: 'm:f', replicas: 40}\n")
    launcher = FakeLauncher({f"w[{i}]": [Attempt(0.5)] for i in range(40)})
    result, _ = supervise(plan, launcher)
    assert result.status == "ok"
    assert [len(b) for b in launcher.batches] == [START_BATCH, 40 - START_BATCH]
    assert [n for b in launcher.batches for n in b] == [f"w[{i}]" for i in range(40)]


def test_the_starts_of_one_step_are_said_in_one_go_and_in_order(tmp_path: Path) -> None:
    # One write for a step's starts, not one each: 256 starts woke the reader of topo's
    # stderr 256 times. Other lines still come after the starts and ends before them.
    plan = plan_of(
        tmp_path,
        """
        processes:
          a: {target: "m:f"}
          b: {target: "m:f"}
          w: {target: "m:f", restart: on-failure}
        """,
    )
    launcher = FakeLauncher(
        {"a": [Attempt(0.5)], "b": [Attempt(0.5)], "w": [Attempt(0.5, 1), Attempt(0.5)]}
    )
    result, said = supervise(plan, launcher, lifecycle=True)
    assert result.status == "ok"
    said = [re.sub(r" \(pid \d+\)", "", text) for text in said]
    assert said[0] == "a running\nb running\nw running"
    lines = [one for text in said for one in text.split("\n")]
    assert lines[3:8] == [
        "a exited (0)",
        "b exited (0)",
        "w exited with code 1; restart 1 of 3 in 0.1s",
        "w running",
        "w exited (0)",
    ]
    assert lines[8].startswith("bottleneck: ")


def test_a_restart_that_succeeds_ends_ok(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, "processes:\n  w: {target: 'm:f', restart: on-failure}\n")
    launcher = FakeLauncher({"w": [Attempt(0.2, 1), Attempt(0.2, 0, "done")]})
    result, _ = supervise(plan, launcher)
    assert result.status == "ok"
    w = result.processes["w"]
    assert (w.state, w.restarts, w.result) == (State.EXITED, 1, "done")


def test_max_restarts_reached_fails(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path, "processes:\n  w: {target: 'm:f', restart: on-failure, max_restarts: 2}\n"
    )
    launcher = FakeLauncher({"w": [Attempt(1.0, 3)]})
    result, _ = supervise(plan, launcher)
    assert (result.status, result.message) == ("failed", "w exited with code 3")
    assert result.processes["w"].restarts == 2


def test_the_runs_timeout_stops_everything(tmp_path: Path) -> None:
    launcher = FakeLauncher({})
    result, _ = supervise(plan_of(tmp_path, "timeout: 2s\n" + TWO), launcher)
    assert (result.status, result.exit_code) == ("timeout", 4)
    assert result.message == "the run's timeout of 2s passed; still running: a, b"
    assert launcher.actions("terminate")[0][0] == pytest.approx(2.0, abs=TICK)
    assert {r.state for r in result.processes.values()} == {State.STOPPED}


def test_a_process_timeout_marks_that_instance(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        """
        processes:
          slow: {target: "m:f", timeout: 1.5}
          other: {target: "m:f"}
        """,
    )
    result, _ = supervise(plan, FakeLauncher({}))
    assert (result.status, result.message) == ("timeout", "slow ran past its timeout of 1.5s")
    assert result.processes["slow"].state == State.TIMEOUT
    assert result.processes["other"].state == State.STOPPED


def test_daemons_do_not_keep_the_run_alive(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        """
        processes:
          server: {target: "m:f", daemon: true}
          client: {target: "m:f"}
        """,
    )
    launcher = FakeLauncher({"client": [Attempt(1.0, 0, 7)]})
    result, _ = supervise(plan, launcher)
    assert result.status == "ok"
    assert result.processes["server"].state == State.STOPPED
    assert launcher.actions("terminate") == [(pytest.approx(1.0, abs=TICK), "server")]


def test_a_daemon_that_fails_while_others_run_fails_the_run(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        """
        processes:
          server: {target: "m:f", daemon: true}
          client: {target: "m:f"}
        """,
    )
    launcher = FakeLauncher({"client": [FOREVER], "server": [Attempt(0.5, 1)]})
    result, _ = supervise(plan, launcher)
    assert (result.status, result.message) == ("failed", "server exited with code 1")


AFTER = """
processes:
  setup: {target: "m:f"}
  work: {target: "m:f", after: [setup]}
  report: {target: "m:f", after: [work]}
"""


def test_after_starts_each_stage_when_the_previous_exited_0(tmp_path: Path) -> None:
    launcher = FakeLauncher(
        {"setup": [Attempt(1.0)], "work": [Attempt(2.0)], "report": [Attempt(0.5)]}
    )
    result, _ = supervise(plan_of(tmp_path, AFTER), launcher)
    assert result.status == "ok"
    starts = dict((n, t) for t, n in launcher.actions("start"))
    assert starts["setup"] == 0.0
    assert starts["work"] == pytest.approx(1.0, abs=TICK)
    assert starts["report"] == pytest.approx(3.0, abs=2 * TICK)


def test_after_a_failed_stage_nothing_later_starts(tmp_path: Path) -> None:
    launcher = FakeLauncher({"setup": [Attempt(1.0)], "work": [Attempt(1.0, 2)]})
    result, _ = supervise(plan_of(tmp_path, AFTER), launcher)
    assert (result.status, result.message) == ("failed", "work exited with code 2")
    assert result.processes["report"].state == State.NOT_STARTED
    assert [n for _, n in launcher.actions("start")] == ["setup", "work"]


@pytest.mark.parametrize(
    ("interrupt", "status", "code", "message"),
    [
        (KeyboardInterrupt, "interrupted", 130, "interrupted by Ctrl-C (SIGINT)"),
        (_Stopped, "interrupted", 143, "stopped by SIGTERM"),
    ],
)
def test_signals_stop_everything_with_their_exit_codes(
    tmp_path: Path, interrupt: type[BaseException], status: str, code: int, message: str
) -> None:
    launcher = FakeLauncher({"a": [Attempt(0.2, 0, "kept")]}, interrupt_at=1.0, interrupt=interrupt)
    result, _ = supervise(plan_of(tmp_path, TWO), launcher)
    assert (result.status, result.exit_code, result.message) == (status, code, message)
    assert result.processes["a"].result == "kept"
    assert result.processes["b"].state == State.STOPPED
    assert launcher.actions("terminate") == [(1.0, "b")]


def test_a_second_signal_while_topo_speaks_does_not_wait_for_the_output(
    tmp_path: Path,
) -> None:
    # The CLI's printer holds a lock while it writes. A second Ctrl-C landing inside it
    # once made the handler print "stopping at once" through the same lock: topo hung.
    lock = threading.Lock()
    said: list[str] = []
    hung: list[str] = []

    def say(name: str, line: str) -> None:
        if not lock.acquire(timeout=2):
            hung.append(line)
            return
        try:
            said.extend(line.split("\n"))  # starts and ends come a step at a time
            if any(one.startswith(("b running", "b stopped")) for one in line.split("\n")):
                signal.raise_signal(signal.SIGINT)  # a Ctrl-C, handled inside say()
        finally:
            lock.release()

    launcher = FakeLauncher({"a": [Attempt(stubborn=True)]})
    supervisor = Supervisor(
        plan_of(tmp_path, TWO), launcher, RunOptions(lifecycle=True), say, clock=launcher.clock
    )
    result = supervisor.run()
    assert hung == []
    assert (result.status, result.exit_code) == ("interrupted", 130)
    assert "stopping at once" in said  # said by the stop, which the second signal hurried
    assert [n for _, n in launcher.actions("kill")] == ["a"]  # the stubborn one, at once


DEADLOCK = """
channels:
  ab: queue
  ba: queue
processes:
  a: {target: "m:f", inputs: {inbox: ba}, outputs: {outbox: ab}}
  b: {target: "m:f", inputs: {inbox: ab}, outputs: {outbox: ba}}
"""


def test_everyone_blocked_with_no_progress_is_a_deadlock(tmp_path: Path) -> None:
    launcher = FakeLauncher(
        {"a": [Attempt(waits=Wait("get", "ba"))], "b": [Attempt(waits=Wait("get", "ab"))]}
    )
    result, said = supervise(plan_of(tmp_path, DEADLOCK), launcher)
    assert (result.status, result.exit_code) == ("deadlock", 3)
    assert said[1:] == [
        "  a waits in get() on 'ba'; its only peer is 'b' (blocked in get() on 'ab')",
        "  b waits in get() on 'ab'; its only peer is 'a' (blocked in get() on 'ba')",
    ]
    ((t, _),) = launcher.actions("dump_stacks")
    assert QUIET_S <= t <= QUIET_S + 0.5


def test_no_deadlock_while_a_peer_runs_and_one_once_it_is_gone(tmp_path: Path) -> None:
    launcher = FakeLauncher({"a": [Attempt(waits=Wait("get", "ba"))], "b": [Attempt(3.0)]})
    result, _ = supervise(plan_of(tmp_path, DEADLOCK), launcher)
    assert result.status == "deadlock"
    assert result.message == (
        "deadlock: a waits in get() on 'ba'; its only peer 'b' exited with code 0"
    )
    ((t, _),) = launcher.actions("dump_stacks")
    assert 3.0 + QUIET_S <= t <= 3.0 + QUIET_S + 0.5


def test_without_watch_no_deadlock_is_declared(tmp_path: Path) -> None:
    launcher = FakeLauncher(
        {"a": [Attempt(waits=Wait("get", "ba"))], "b": [Attempt(waits=Wait("get", "ab"))]},
        interrupt_at=5.0,
    )
    result, _ = supervise(plan_of(tmp_path, DEADLOCK), launcher, watch=False)
    assert result.status == "interrupted"


def test_a_lock_held_by_a_dead_instance_fails_the_run(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        """
        locks:
          guard: lock
        processes:
          a: {target: "m:f", uses: {guard: guard}, restart: on-failure}
          b: {target: "m:f", uses: {guard: guard}}
        """,
    )
    launcher = FakeLauncher({"a": [Attempt(0.5, -9)]}, held={"guard": "a"})
    result, _ = supervise(plan, launcher)
    assert result.status == "failed"
    assert result.message == (
        "lock 'guard' was held by a, which was killed by SIGKILL: "
        "it stays locked for ever, so the run cannot go on"
    )
    assert launcher.starts["a"] == 1  # not restarted: it would wait for ever too


def test_status_rows_keep_the_state_and_the_detail_apart(tmp_path: Path) -> None:
    rows: list[Any] = []
    launcher = FakeLauncher(
        {"a": [Attempt(0.3, 1)], "b": [Attempt(waits=Wait("get", "q"))]}, interrupt_at=1.0
    )
    supervise(plan_of(tmp_path, TWO), launcher, status=rows.append)
    last = {r.name: r for r in rows[-1]}
    assert last["b"].state == State.RUNNING
    assert last["b"].detail == "blocked in get() on 'q'"
    assert last["b"].label == "blocked in get() on 'q'"


def test_what_is_left_in_channels_is_counted_kept_and_said(tmp_path: Path) -> None:
    launcher = FakeLauncher({"a": [Attempt(0.1)], "b": [Attempt(0.1)]}, left={"q": [1, 2, 3]})
    result, said = supervise(plan_of(tmp_path, TWO), launcher)
    assert result.status == "ok"  # a message nobody read is no failure, but it is told
    assert result.undelivered == {"q": 3}
    assert result.leftovers == {"q": [1, 2, 3]}
    assert result.to_json()["undelivered"] == {"q": 3}
    assert "undelivered: 3 in 'q'" in said
