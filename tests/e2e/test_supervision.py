"""Fault injection: the real CLI on runs whose instances fail, hang, deadlock or are
interrupted, each ending with a clear verdict, in bounded time, leaving nothing behind.

The specs and their targets are in faults/ (``faults:<function>``, the spec's folder
being first on sys.path). Every test asserts the exit code, the JSON status and
message, a bound on the wall time, and that every process the run started is gone
afterwards (the ``run_topo``/``start_topo`` fixtures check it once more after the test).
Signals are sent only once the instances say on stderr that they are running.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest.mock import ANY

import pytest

import topo
from e2e.conftest import marked_record
from topo.deadlock import QUIET_S
from topo.stacks import FOLDED_HEADER
from topo.supervise import GRACE_PERIOD_S, RESTART_BURST, RESTART_WINDOW_S

if TYPE_CHECKING:
    from conftest import LiveTopo, TopoRun

FAULTS = Path(__file__).resolve().parent / "faults"

# Starting an interpreter per instance (spawn) on a loaded two-core machine: the slack
# allowed on top of what a scenario needs by itself.
STARTUP_S = 5.0
# After a signal: the grace period at most, plus the same slack.
STOP_BOUND_S = GRACE_PERIOD_S + STARTUP_S
# Once topo has exited, its helpers (resource tracker) follow within this.
GONE_WITHIN_S = 3.0

Doc = dict[str, Any]
RunTopo = Callable[..., "TopoRun"]
StartTopo = Callable[..., "LiveTopo"]


def topo_args(spec: str, runs_dir: Path) -> tuple[str, ...]:
    return ("run", "--json", "--runs-dir", str(runs_dir), str(FAULTS / f"{spec}.yaml"))


def run_fault(run_topo: RunTopo, tmp_path: Path, spec: str) -> TopoRun:
    return run_topo(*topo_args(spec, tmp_path))


def finished(run: TopoRun, code: int, status: str, *, within: float, at_least: float = 0.0) -> Doc:
    """Assert how the run ended and how long it took, and that it left nothing running;
    return its JSON document."""
    assert run.doc is not None, f"stdout is not one JSON document\n{run}"
    doc: Doc = run.doc
    assert run.returncode == code, str(run)
    assert doc["exit_code"] == code, str(run)
    assert doc["status"] == status, str(run)
    assert at_least <= run.elapsed_s < within, f"took {run.elapsed_s:.2f} s\n{run}"
    assert "KeyboardInterrupt" not in run.stderr, str(run)
    assert run.teardown_noise() == [], str(run)  # no semaphore lost or freed twice
    # a traceback of topo's own, not one of an instance's (those are under its name)
    assert not any(line.startswith("Traceback") for line in run.stderr.splitlines()), str(run)
    # Every instance was joined before topo exited; helpers follow it shortly.
    assert run.instances_alive() == [], str(run)
    assert run.survivors(within=GONE_WITHIN_S) == [], str(run)
    return doc


def states(doc: Doc) -> dict[str, tuple[str, int | None]]:
    """instance -> (state, exit code)"""
    return {n: (r["state"], r["exit_code"]) for n, r in doc["processes"].items()}


# ----- failures -----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_instance_that_raises(run_topo: RunTopo, tmp_path: Path) -> None:
    run = run_fault(run_topo, tmp_path, "raises")
    doc = finished(run, 1, "failed", within=STARTUP_S + 2)
    assert doc["message"] == "boom exited with code 1"
    assert states(doc) == {
        "finisher": ("exited", 0),
        "sleeper": ("stopped", -signal.SIGTERM),
        "boom": ("failed", 1),
    }
    assert doc["processes"]["finisher"]["result"] == 42  # kept
    assert "ValueError: kaboom" in doc["processes"]["boom"]["error"]
    # the traceback, under the instance's name
    assert "boom | Traceback (most recent call last):" in run.stderr
    assert "boom | ValueError: kaboom" in run.stderr


@pytest.mark.timeout(60)
def test_instance_killed_by_sigkill(run_topo: RunTopo, tmp_path: Path) -> None:
    run = run_fault(run_topo, tmp_path, "killed")
    doc = finished(run, 1, "failed", within=STARTUP_S + 2)
    assert doc["message"] == "victim was killed by SIGKILL"
    assert states(doc) == {
        "sleeper": ("stopped", -signal.SIGTERM),
        "victim": ("killed", -signal.SIGKILL),
    }


@pytest.mark.timeout(60)
def test_instance_killed_while_holding_a_lock(run_topo: RunTopo, tmp_path: Path) -> None:
    run = run_fault(run_topo, tmp_path, "lock_holder_dies")
    # at once: no waiting for the deadlock detector's quiet second
    doc = finished(run, 1, "failed", within=STARTUP_S + 1)
    assert doc["message"].startswith(
        "lock 'print_lock' was held by holder, which was killed by SIGKILL"
    ), doc["message"]
    assert states(doc) == {
        "holder": ("killed", -signal.SIGKILL),
        "waiter": ("stopped", -signal.SIGTERM),
    }
    assert "waiter | waiting for the lock" in run.stderr


@pytest.mark.timeout(60)
def test_barrier_party_dies_while_others_wait(run_topo: RunTopo, tmp_path: Path) -> None:
    run = run_fault(run_topo, tmp_path, "barrier_party_dies")
    doc = finished(run, 1, "failed", within=STARTUP_S + 1)
    assert doc["message"] == (
        "barrier 'start' lost its party quitter, which exited with code 3: "
        "runner[0], runner[1] would wait for ever"
    )
    assert states(doc) == {
        "runner[0]": ("stopped", -signal.SIGTERM),
        "runner[1]": ("stopped", -signal.SIGTERM),
        "quitter": ("failed", 3),
    }


# ----- restarts -----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_restart_that_succeeds(run_topo: RunTopo, tmp_path: Path) -> None:
    run = run_fault(run_topo, tmp_path, "restart_succeeds")
    doc = finished(run, 0, "ok", within=STARTUP_S + 2)
    assert "message" not in doc
    flaky = doc["processes"]["flaky"]
    assert (flaky["state"], flaky["exit_code"], flaky["restarts"]) == ("exited", 0, 1)
    assert flaky["result"] == "second try"
    assert "flaky | first attempt fails" in run.stderr
    assert "flaky | second attempt succeeds" in run.stderr
    said = [line for line in run.stderr.splitlines() if line.startswith("topo: flaky")]
    assert [re.sub(r"pid \d+", "pid N", line) for line in said] == [  # in order, in a pipe
        "topo: flaky running (pid N)",
        "topo: flaky exited with code 1; restart 1 of 3 in 0.1s",
        "topo: flaky running (pid N)",
        "topo: flaky exited (0)",
    ]


@pytest.mark.timeout(60)
def test_each_restart_draws_new_random_numbers_reproducibly(
    run_topo: RunTopo, tmp_path: Path
) -> None:
    # With the same seed every attempt, a failure caused by a random draw repeated on
    # every restart (issue 14).
    run = run_fault(run_topo, tmp_path, "reseed")
    doc = finished(run, 0, "ok", within=STARTUP_S + 3)
    unlucky = doc["processes"]["unlucky"]
    seeds = unlucky["seeds"]
    assert unlucky["restarts"] == 2 and len(set(seeds)) == 3
    draws = re.findall(r"unlucky \| attempt (\d) seed (\d+) draw (\S+)", run.stderr)
    assert [(int(a), int(s)) for a, s, _ in draws] == list(enumerate(seeds))
    assert len({d for _, _, d in draws}) == 3  # a new draw each time
    assert unlucky["result"] == [2, seeds[2], float(draws[2][2])]
    manifest = json.loads((Path(doc["run_dir"]) / "run.json").read_text())["manifest"]
    assert manifest["seeds"]["unlucky"] == seeds[0]  # the first attempt: the instance's
    again = run_fault(run_topo, tmp_path, "reseed")  # the same spec and seed: the same draws
    assert finished(again, 0, "ok", within=STARTUP_S + 3)["processes"]["unlucky"] == {
        **unlucky,
        "duration_s": ANY,
        "pid": ANY,
    }


@pytest.mark.timeout(60)
def test_restart_storm_gives_up(run_topo: RunTopo, tmp_path: Path) -> None:
    run = run_fault(run_topo, tmp_path, "restart_storm")
    # backoff 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s before the last failure, far from max_restarts
    backoff = sum(0.1 * 2**i for i in range(RESTART_BURST))
    doc = finished(run, 1, "failed", within=backoff + 2 * STARTUP_S, at_least=backoff)
    assert doc["message"] == (
        f"crasher exited with code 1 and was restarted {RESTART_BURST} times within "
        f"{RESTART_WINDOW_S:g}s: giving up on a restart storm"
    )
    crasher = doc["processes"]["crasher"]
    assert (crasher["state"], crasher["exit_code"]) == ("failed", 1)
    assert crasher["restarts"] == RESTART_BURST
    assert run.stderr.count("crasher | failing") == RESTART_BURST + 1


# ----- time limits --------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_run_timeout(run_topo: RunTopo, tmp_path: Path) -> None:
    run = run_fault(run_topo, tmp_path, "run_timeout")
    doc = finished(run, 4, "timeout", within=1.5 + STOP_BOUND_S, at_least=1.5)
    assert doc["message"] == "the run's timeout of 1.5s passed; still running: sleeper"
    assert states(doc) == {
        "finisher": ("exited", 0),
        "sleeper": ("stopped", -signal.SIGTERM),
    }
    assert doc["processes"]["finisher"]["result"] == 42


@pytest.mark.timeout(60)
def test_process_timeout(run_topo: RunTopo, tmp_path: Path) -> None:
    run = run_fault(run_topo, tmp_path, "process_timeout")
    doc = finished(run, 4, "timeout", within=1.5 + STOP_BOUND_S, at_least=1.5)
    assert doc["message"] == "slow ran past its timeout of 1.5s"
    assert states(doc) == {
        "slow": ("timeout", -signal.SIGTERM),
        "other": ("stopped", -signal.SIGTERM),
    }
    assert doc["processes"]["slow"]["duration_s"] >= 1.5


# ----- signals ------------------------------------------------------------------------


def interrupt(start_topo: StartTopo, tmp_path: Path, signum: int, group: bool) -> Doc:
    """Start two instances that use a manager's dict, wait until both run, send
    ``signum``; check the stop is quick and clean, and return the run's document."""
    live = start_topo(*topo_args("manager_dict", tmp_path))
    live.wait_for("holder[0] | ready")
    live.wait_for("holder[1] | ready")
    sent = live.signal(signum, group=group)
    run = live.finish()
    assert run.ended_at - sent < GRACE_PERIOD_S, f"{run.ended_at - sent:.2f} s\n{run}"
    assert "Traceback" not in run.stderr, str(run)
    code, message = (
        (130, "interrupted by Ctrl-C (SIGINT)")
        if signum == signal.SIGINT
        else (143, "stopped by SIGTERM")
    )
    doc = finished(run, code, "interrupted", within=STARTUP_S + STOP_BOUND_S)
    assert doc["message"] == message
    # one line says so, not one per instance
    assert run.stderr.count(message) == 1, str(run)
    assert states(doc) == {
        "holder[0]": ("stopped", -signal.SIGTERM),
        "holder[1]": ("stopped", -signal.SIGTERM),
    }
    # the manager outlived the signal long enough for the final state to be read
    assert sorted(doc["state"]["seen"].values()) == ["here", "here"]
    return doc


@pytest.mark.timeout(60)
@pytest.mark.parametrize("group", [True, False], ids=["group", "topo_alone"])
def test_sigint(start_topo: StartTopo, tmp_path: Path, group: bool) -> None:
    interrupt(start_topo, tmp_path, signal.SIGINT, group)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_ctrl_c_during_start_up_is_one_line_and_130(
    start_topo: StartTopo, tmp_path: Path, method: str
) -> None:
    """A terminal's Ctrl-C (SIGINT to the whole group) while instances are still
    starting: never ignored, no traceback from topo or from a child just started."""
    for attempt in range(3):
        live = start_topo(
            *topo_args("many_sleepers", tmp_path / str(attempt)),
            "--set",
            f"start_method={method}",
        )
        live.wait_for("sleeper[1] | ready")  # some run, most are still starting
        sent = live.signal(signal.SIGINT, group=True)
        run = live.finish()
        doc = finished(run, 130, "interrupted", within=STARTUP_S + STOP_BOUND_S + 10)
        assert run.ended_at is not None and run.ended_at - sent < STOP_BOUND_S, str(run)
        assert "Traceback" not in run.stderr and "KeyboardInterrupt" not in run.stderr, str(run)
        assert run.stderr.count("interrupted by Ctrl-C (SIGINT)") == 1, str(run)
        assert doc["processes"]["sleeper[0]"]["state"] == "stopped"


MASK_PROBE = """
import os, sys
if sys.argv[:1] == ["-c"]:  # a process multiprocessing started by exec
    blocked = open("/proc/self/status").read().split("SigBlk:")[1].split()[0]
    with open(os.environ["TOPO_TEST_MASK_LOG"], "a") as log:
        log.write(f"{blocked} {' '.join(sys.argv)}\\n")
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_instances_start_with_stop_signals_blocked(
    run_topo: RunTopo, tmp_path: Path, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every process multiprocessing execs for a run (instances under spawn, the fork
    server whose mask forked instances inherit, the resource tracker) starts with SIGINT
    and SIGTERM blocked, the first instance included: a Ctrl-C while it still imports
    and unpickles its job waits for child_main's own handlers (else a KeyboardInterrupt
    traceback). multiprocessing's resource tracker unblocks both in the parent when it
    starts, which once let the first instance start unprotected."""
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(MASK_PROBE)
    log = tmp_path / "masks.log"
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(probe), os.environ.get("PYTHONPATH", "")])
    )
    monkeypatch.setenv("TOPO_TEST_MASK_LOG", str(log))
    run = run_topo(*topo_args("answers", tmp_path), "--set", f"start_method={method}")
    assert run.returncode == 0, str(run)
    started = log.read_text().splitlines()
    assert len(started) >= (4 if method == "spawn" else 2), started
    stop_signals = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))
    unprotected = [
        line for line in started if int(line.split()[0], 16) & stop_signals != stop_signals
    ]
    assert not unprotected, started


@pytest.mark.timeout(60)
def test_sigterm(start_topo: StartTopo, tmp_path: Path) -> None:
    interrupt(start_topo, tmp_path, signal.SIGTERM, group=False)


@pytest.mark.timeout(60)
def test_sigterm_ignored_by_an_instance_is_followed_by_sigkill(
    start_topo: StartTopo, tmp_path: Path
) -> None:
    live = start_topo(*topo_args("stubborn", tmp_path))
    live.wait_for("stubborn | ready")
    live.wait_for("sleeper | ready")
    sent = live.signal(signal.SIGTERM)
    run = live.finish()
    doc = finished(run, 143, "interrupted", within=STARTUP_S + STOP_BOUND_S)
    stopped_in = run.ended_at - sent
    assert GRACE_PERIOD_S <= stopped_in < STOP_BOUND_S, f"{stopped_in:.2f} s\n{run}"
    assert "stubborn | ignoring SIGTERM" in run.stderr
    assert states(doc) == {
        "stubborn": ("stopped", -signal.SIGKILL),
        "sleeper": ("stopped", -signal.SIGTERM),
    }


@pytest.mark.timeout(60)
def test_second_sigint_kills_at_once(start_topo: StartTopo, tmp_path: Path) -> None:
    live = start_topo(*topo_args("stubborn", tmp_path))
    live.wait_for("stubborn | ready")
    live.wait_for("sleeper | ready")
    first = live.signal(signal.SIGINT, group=True)
    live.wait_for("stubborn | ignoring SIGTERM", timeout=GRACE_PERIOD_S)  # topo is stopping
    second = live.signal(signal.SIGINT, group=True)
    run = live.finish(timeout=15.0)  # a hang fails well before the suite's time is up
    doc = finished(run, 130, "interrupted", within=STARTUP_S + STOP_BOUND_S)
    times = f"second SIGINT after {second - first:.2f} s, exit after {run.ended_at - first:.2f} s"
    assert run.ended_at - first < GRACE_PERIOD_S, f"{times}\n{run}"
    assert run.ended_at - second < 1.5, f"{times}\n{run}"
    assert "topo: stopping at once" in run.stderr
    assert "Traceback" not in run.stderr
    assert states(doc)["stubborn"] == ("stopped", -signal.SIGKILL)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_sigkill_of_topo_leaves_nothing(
    start_topo: StartTopo, tmp_path: Path, start_method: str
) -> None:
    # each instance watches a pidfd of topo (tests/test_child.py); the guardian kills
    # their process groups too
    live = start_topo(*topo_args("manager_dict", tmp_path), "--set", f"start_method={start_method}")
    live.wait_for("holder[0] | ready")
    live.wait_for("holder[1] | ready")
    started = live.processes()  # the instances, the manager, the resource tracker
    assert len(started) >= 3, started  # two instances and the manager at least
    sent = live.signal(signal.SIGKILL)
    run = live.finish()
    assert run.returncode == -signal.SIGKILL
    left = live.survivors([pid for pid, *_ in started], within=2.0)
    assert left == [], (
        f"{time.monotonic() - sent:.1f} s after topo's SIGKILL, of {started} "
        f"these are still alive: {left}\n{run}"
    )


# ----- run-time deadlock detection ----------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("start_method", ["spec's", "fork"])
def test_duplex_pipe_both_sides_recv_first(
    run_topo: RunTopo, tmp_path: Path, start_method: str
) -> None:
    # Under fork the stack dump is registered in topo's process and inherited (child.py)
    chosen = [] if start_method == "spec's" else ["--set", f"start_method={start_method}"]
    run = run_topo(*topo_args("pipe_both_recv", tmp_path), *chosen)
    doc = finished(run, 3, "deadlock", within=QUIET_S + STARTUP_S + 2, at_least=QUIET_S)
    assert doc["message"] == (
        "deadlock: alice waits in recv() on 'link'; its only peer is 'bob' "
        "(blocked in recv() on 'link'); bob waits in recv() on 'link'; its only peer is "
        "'alice' (blocked in recv() on 'link')"
    )
    assert states(doc) == {
        "alice": ("stopped", -signal.SIGTERM),
        "bob": ("stopped", -signal.SIGTERM),
    }
    # each blocked instance's stack, under its name, the user's frames first
    for name in ("alice", "bob"):
        lines = [x for x in run.stderr.splitlines() if x.startswith(f"{name} | ")]
        at = lines.index(f"{name} | {FOLDED_HEADER}")
        assert lines[at + 1] == f"{name} |   ... 3 frames folded"  # Connection.recv's
        assert re.fullmatch(
            rf'{name} \|   File ".*faults.py", line \d+ in recv_first', lines[at + 2]
        )
        assert not any("topo/backends/" in x or "multiprocessing/" in x for x in lines[at:])


@pytest.mark.timeout(60)
def test_reader_whose_only_writer_exits(run_topo: RunTopo, tmp_path: Path) -> None:
    run = run_fault(run_topo, tmp_path, "writer_leaves")
    doc = finished(run, 3, "deadlock", within=QUIET_S + STARTUP_S + 2, at_least=QUIET_S)
    assert doc["message"] == (
        "deadlock: reader waits in get() on 'q'; its only peer 'feeder' exited with code 0"
    )
    assert states(doc) == {
        "feeder": ("exited", 0),
        "reader": ("stopped", -signal.SIGTERM),
    }
    assert doc["processes"]["feeder"]["result"] == "wrote nothing"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "channel",
    [
        "simple_queue",
        "joinable_queue",
        "{kind: queue, maxsize: 2}",
        "{kind: queue, via: manager}",
        "{kind: queue, transport: shm, slot_size: 1KiB, slots: 2}",
        "{kind: queue, transport: mp}",  # the kinds above take a pipe (one reader)
        "{kind: queue, transport: socket}",
        "{kind: joinable_queue, transport: socket}",
        "{kind: simple_queue, transport: mp}",
        "{kind: simple_queue, transport: socket}",
    ],
)
def test_reader_whose_only_writer_exits_on_every_queue(
    run_topo: RunTopo, tmp_path: Path, channel: str
) -> None:
    # Each kind of queue blocks in a different function: the sampler knows them all.
    spec = tmp_path / "spec.yaml"
    text = (FAULTS / "writer_leaves.yaml").read_text()
    spec.write_text(text.replace("q: queue", f"q: {channel}"))
    (tmp_path / "faults.py").write_text((FAULTS / "faults.py").read_text())
    run = run_topo("run", "--json", "--runs-dir", str(tmp_path / "runs"), str(spec))
    doc = finished(run, 3, "deadlock", within=QUIET_S + STARTUP_S + 2, at_least=QUIET_S)
    assert doc["message"] == (
        "deadlock: reader waits in get() on 'q'; its only peer 'feeder' exited with code 0"
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (  # each side fills the bounded queue the other reads
            "full_queues",
            "a waits in put() on 'ab'; its only peer is 'b' (blocked in put() on 'ba'); "
            "b waits in put() on 'ba'; its only peer is 'a' (blocked in put() on 'ab')",
        ),
        (  # a task nobody marks done
            "join_unfinished",
            "boss waits in join() on 'tasks'; its only peer 'worker' exited with code 0",
        ),
    ],
)
def test_deadlock_is_explained(run_topo: RunTopo, tmp_path: Path, fault: str, message: str) -> None:
    run = run_fault(run_topo, tmp_path, fault)
    doc = finished(run, 3, "deadlock", within=QUIET_S + STARTUP_S + 2, at_least=QUIET_S)
    assert doc["message"] == f"deadlock: {message}"


@pytest.mark.timeout(60)
def test_no_false_alarm_on_a_fast_ping_pong(run_topo: RunTopo, tmp_path: Path) -> None:
    # Both sides spend nearly all their time in recv(), and the sampler nearly always
    # sees them there; their threads' context switches show that they progress.
    run = run_fault(run_topo, tmp_path, "ping_pong")
    doc = finished(run, 0, "ok", within=2.5 + STARTUP_S + 2, at_least=2.5)
    assert "deadlock" not in run.stderr
    rounds = doc["processes"]["pinger"]["result"]
    assert rounds == doc["processes"]["ponger"]["result"] > 100


@pytest.mark.timeout(60)
def test_two_locks_taken_in_opposite_orders(run_topo: RunTopo, tmp_path: Path) -> None:
    run = run_fault(run_topo, tmp_path, "lock_order")
    doc = finished(run, 3, "deadlock", within=QUIET_S + STARTUP_S + 2, at_least=QUIET_S)
    assert doc["message"] == (
        "deadlock: left waits in acquire() on 'b', held by 'right' "
        "(blocked in acquire() on 'a'); right waits in acquire() on 'a', held by 'left' "
        "(blocked in acquire() on 'b')"
    )
    assert states(doc) == {
        "left": ("stopped", -signal.SIGTERM),
        "right": ("stopped", -signal.SIGTERM),
    }


@pytest.mark.timeout(60)
def test_no_false_alarm_on_a_slow_writer(run_topo: RunTopo, tmp_path: Path) -> None:
    run = run_fault(run_topo, tmp_path, "slow_writer")
    doc = finished(run, 0, "ok", within=2.0 + STARTUP_S + 2, at_least=2.0)
    assert states(doc) == {"writer": ("exited", 0), "reader": ("exited", 0)}
    assert doc["processes"]["reader"]["result"] == "late"
    assert "deadlock" not in run.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_no_false_alarm_while_a_helper_thread_can_progress(
    run_topo: RunTopo, tmp_path: Path, method: str
) -> None:
    run = run_topo(*topo_args("helper_thread", tmp_path), "--set", f"start_method={method}")
    doc = finished(run, 0, "ok", within=3.0 + STARTUP_S + 2, at_least=3.0)
    assert doc["processes"]["asker"]["result"] == 42
    assert "deadlock" not in run.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_a_one_way_pipe_reader_sees_eof_when_its_writer_returns(
    run_topo: RunTopo, tmp_path: Path, method: str
) -> None:
    run = run_topo(*topo_args("pipe_eof", tmp_path), "--set", f"start_method={method}")
    doc = finished(run, 0, "ok", within=STARTUP_S + 2)
    assert states(doc) == {"reader": ("exited", 0), "writer": ("exited", 0)}
    assert doc["processes"]["reader"]["result"] == 3


@pytest.mark.timeout(60)
def test_many_waiters_are_explained_in_one_line(run_topo: RunTopo, tmp_path: Path) -> None:
    run = run_fault(run_topo, tmp_path, "many_waiters")
    doc = finished(run, 3, "deadlock", within=QUIET_S + STARTUP_S + 3)
    assert doc["message"] == (
        "deadlock: waiter[0..23] wait in wait() on 'go'; "
        "their peers: 'starter' (exited with code 0)"
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
@pytest.mark.parametrize("kind", ["queue", "joinable_queue"])
def test_a_put_that_cannot_be_sent_fails_the_run(
    run_topo: RunTopo, tmp_path: Path, method: str, kind: str
) -> None:
    # multiprocessing's queue pickles in its feeder thread, which would drop the item.
    run = run_topo(
        *topo_args("lost_put", tmp_path),
        *with_sets(f"start_method={method}", f"channels.tasks.kind={kind}"),
        *with_sets("channels.tasks.transport=mp"),
    )
    doc = finished(run, 1, "failed", within=STARTUP_S + 2)
    assert doc["message"] == "producer exited with code 1"
    error = doc["processes"]["producer"]["error"]
    assert error.startswith(
        "producer: out.put() of a function could not be sent through channel 'tasks': "
        "AttributeError: "
    ), error
    assert doc["processes"]["consumer"]["state"] == "stopped"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["socket", "pipe"])
@pytest.mark.parametrize("kind", ["queue", "joinable_queue", "simple_queue"])
def test_a_put_that_cannot_be_pickled_raises_where_it_is_called(
    run_topo: RunTopo, tmp_path: Path, transport: str, kind: str
) -> None:
    # topo's transports pickle in put() itself: the user's line is in the traceback.
    run = run_topo(
        *topo_args("lost_put", tmp_path),
        *with_sets(f"channels.tasks.kind={kind}", f"channels.tasks.transport={transport}"),
    )
    doc = finished(run, 1, "failed", within=STARTUP_S + 2)
    assert doc["message"] == "producer exited with code 1"
    error = doc["processes"]["producer"]["error"]
    assert "out.put(lambda" in error, error  # the line of faults.py that put it
    assert (
        "producer: out.put() of a function could not be sent through channel 'tasks': "
        "it cannot be pickled"
    ) in error
    assert "AttributeError: " in error
    assert doc["processes"]["consumer"]["state"] == "stopped"


# ----- daemons ------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_daemon_stopped_when_the_others_finish(run_topo: RunTopo, tmp_path: Path) -> None:
    run = run_fault(run_topo, tmp_path, "daemon")
    doc = finished(run, 0, "ok", within=STARTUP_S + 2)
    assert "message" not in doc
    assert states(doc) == {
        "server": ("stopped", -signal.SIGTERM),
        "client": ("exited", 0),
    }
    assert doc["processes"]["client"]["result"] == "done"
    assert doc["state"]["hits"] >= 3


@pytest.mark.timeout(60)
def test_teardown_does_not_hang_on_a_value_lock_held_by_a_stopped_daemon(
    run_topo: RunTopo, tmp_path: Path
) -> None:
    # The daemon holds the lock of a synchronized value when topo stops it; reading the
    # value back afterwards must not wait for that lock for ever ("teardown never hangs").
    run = run_topo(*topo_args("value_lock_held", tmp_path), timeout=10.0)
    doc = finished(run, 0, "ok", within=STARTUP_S + 2)
    assert states(doc) == {
        "server": ("stopped", -signal.SIGTERM),
        "client": ("exited", 0),
    }
    assert "hits" in doc["state"]


# ----- nothing lost -------------------------------------------------------------------

METHODS = ["spawn", "fork", "forkserver"]

KINDS = {
    # transport: auto, which takes a socket here: the spec has no reader (pipes are
    # covered by test_what_a_reader_read_ahead_is_kept_when_it_fails)
    "queue": (),
    "queue over mp": ("channels.tasks.transport=mp",),
    "joinable_queue": ("channels.tasks.kind=joinable_queue",),
    "simple_queue": ("channels.tasks.kind=simple_queue",),
    "shm_queue": ("channels.tasks.transport=shm", "channels.tasks.slots=128"),
    "manager_queue": ("channels.tasks.via=manager",),
    "one_way_pipe": ("channels.tasks.kind=pipe", "channels.tasks.duplex=false"),
}


def with_sets(*sets: str) -> tuple[str, ...]:
    return tuple(arg for s in sets for arg in ("--set", s))


def assert_kept(doc: Doc, count: int) -> None:
    import topo

    assert doc["undelivered"] == {"tasks": count}
    assert topo.undelivered(doc["run_dir"]) == {"tasks": list(range(count))}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_messages_nobody_read_are_kept_and_counted(
    run_topo: RunTopo, tmp_path: Path, kind: str, method: str
) -> None:
    sets = with_sets(*KINDS[kind], f"start_method={method}")
    run = run_topo(*topo_args("leftovers", tmp_path), *sets)
    doc = finished(run, 0, "ok", within=STARTUP_S + 3)
    assert_kept(doc, 100)
    assert "undelivered: 100 in 'tasks'" in run.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_messages_in_flight_are_kept_when_the_writer_fails(
    run_topo: RunTopo, tmp_path: Path, kind: str
) -> None:
    run = run_topo(
        *topo_args("leftovers", tmp_path),
        *with_sets(*KINDS[kind], "processes.writer.args.then=raise"),
    )
    doc = finished(run, 1, "failed", within=STARTUP_S + 3)
    assert_kept(doc, 100)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("transport", "kind"),
    [("auto", "queue"), ("mp", "queue"), ("socket", "queue"), ("pipe", "simple_queue")],
)
def test_what_a_reader_read_ahead_is_kept_when_it_fails(
    run_topo: RunTopo, tmp_path: Path, transport: str, kind: str
) -> None:
    # A pipe's one reader reads many messages at once; those it had not taken when
    # it failed are in shared memory, and counted as undelivered like the others.
    sets = with_sets(f"channels.tasks.transport={transport}", f"channels.tasks.kind={kind}")
    run = run_topo(*topo_args("read_ahead", tmp_path), *sets)
    doc = finished(run, 1, "failed", within=STARTUP_S + 4)
    assert doc["undelivered"] == {"tasks": 90}
    assert topo.undelivered(doc["run_dir"]) == {"tasks": list(range(10, 100))}


@pytest.mark.timeout(60)
def test_messages_in_flight_are_kept_on_a_timeout(run_topo: RunTopo, tmp_path: Path) -> None:
    sets = with_sets("processes.writer.args.then=sleep", "timeout=2")
    run = run_topo(*topo_args("leftovers", tmp_path), *sets)
    doc = finished(run, 4, "timeout", within=2 + STARTUP_S + 3, at_least=2)
    assert_kept(doc, 100)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_messages_in_flight_are_kept_when_topo_is_stopped(
    start_topo: StartTopo, tmp_path: Path, signum: int
) -> None:
    live = start_topo(
        *topo_args("leftovers", tmp_path), *with_sets("processes.writer.args.then=sleep")
    )
    live.wait_for("writer | all put")
    live.signal(signum)
    doc = finished(live.finish(), 128 + signum, "interrupted", within=STARTUP_S + STOP_BOUND_S)
    assert_kept(doc, 100)


# ----- nothing left behind ------------------------------------------------------------


def marked(token: str) -> list[tuple[int, str]]:
    """Processes anywhere on the machine whose command line carries ``token``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if token in cmdline and state not in "ZX":
            found.append((int(entry), cmdline))
    return found


def gone(token: str, within: float = GONE_WITHIN_S) -> list[tuple[int, str]]:
    deadline = time.monotonic() + within
    while (left := marked(token)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid, _ in left:  # do not leave them to the next test
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return left


GRANDCHILD_CASES = [
    *[(how, "return", m) for how in ("popen", "fork_exec", "setsid", "pool") for m in METHODS],
    *[(how, "raise", m) for how in ("popen", "setsid") for m in METHODS],
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("how", "then", "method"), GRANDCHILD_CASES)
def test_what_an_instance_started_does_not_outlive_the_run(
    run_topo: RunTopo, tmp_path: Path, how: str, then: str, method: str
) -> None:
    token = "t" + uuid.uuid4().hex[:12]  # a text, whatever YAML makes of digits
    args = (f"processes.parent.args.{k}={v}" for k, v in (("how", how), ("then", then)))
    run = run_topo(
        *topo_args("grandchildren", tmp_path),
        *with_sets(*args, f"processes.parent.args.token={token}", f"start_method={method}"),
    )
    code, status = (0, "ok") if then == "return" else (1, "failed")
    finished(run, code, status, within=STARTUP_S + 3)
    assert gone(token) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["popen", "fork_exec", "setsid", "pool"])
@pytest.mark.parametrize("method", METHODS)
def test_what_an_instance_started_does_not_outlive_ctrl_c(
    start_topo: StartTopo, tmp_path: Path, how: str, method: str
) -> None:
    token = "t" + uuid.uuid4().hex[:12]  # a text, whatever YAML makes of digits
    args = (f"processes.parent.args.{k}={v}" for k, v in (("how", how), ("then", "sleep")))
    live = start_topo(
        *topo_args("grandchildren", tmp_path),
        *with_sets(*args, f"processes.parent.args.token={token}", f"start_method={method}"),
    )
    live.wait_for("parent | started")
    live.signal(signal.SIGINT, group=True)
    finished(live.finish(), 130, "interrupted", within=STARTUP_S + STOP_BOUND_S)
    assert gone(token) == []


def shared_memory() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith(("sem.mp-", "psm_"))}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("group", [False, True], ids=["topo", "group"])
@pytest.mark.parametrize("method", METHODS)
def test_kill_9_of_topo_leaves_nothing_and_the_record_says_killed(
    start_topo: StartTopo, tmp_path: Path, method: str, group: bool
) -> None:
    """kill -9 of topo, or of its whole process group (docker kill): its guardian stops
    what the instances started, frees the run's shared memory, marks the record."""
    token = "t" + uuid.uuid4().hex[:12]
    before = shared_memory()
    sets = with_sets(f"processes.parent.args.token={token}", f"start_method={method}")
    live = start_topo(*topo_args("shm_and_children", tmp_path), *sets)
    live.wait_for("parent | started")
    live.wait_for("user | ready")
    assert marked(token), "the grandchild runs"
    assert shared_memory() - before, "the run made semaphores and segments"
    live.signal(signal.SIGKILL, group=group)
    run = live.finish()
    assert run.returncode == -signal.SIGKILL
    assert gone(token) == []
    deadline = time.monotonic() + GONE_WITHIN_S
    while (leaked := shared_memory() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leaked == set()
    [summary_file] = tmp_path.glob("*/*/run.json")
    summary = marked_record(summary_file, within=max(0.0, deadline - time.monotonic()))
    assert (summary["status"], summary["exit_code"]) == ("killed", 137)
    assert summary["message"].startswith("topo was killed before the run ended")
