"""The Ray backend, end to end: the real CLI with ``--backend ray`` on a real Ray.

Most runs go to one Ray head started for this module (``ray start --head``, as a
reader of docs/ray.md would), through ``--address``; one runs the README's command,
which starts a local Ray for the run and stops it. After every run, nothing of it may
be left on the cluster: no live actor in topo's namespace, no worker still running one
of its tasks (Ray names them ``ray::topo:<instance>``), no placement group.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("ray")

import contextlib

from e2e.conftest import marked_record
from e2e.test_specs import EXPECTATIONS, SPECS, check_pipeline, spec_id

if TYPE_CHECKING:
    from e2e.conftest import LiveTopo, TopoRun

FAULTS = Path(__file__).resolve().parent / "faults"
REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
RunTopo = Callable[..., "TopoRun"]
StartTopo = Callable[..., "LiveTopo"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def head() -> Iterator[str]:
    """A Ray head for this module's runs: 2 CPUs, a small object store, no dashboard."""
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--object-store-memory=100000000",
            "--disable-usage-stats",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its whole group is stopped at the end
    )
    address = f"127.0.0.1:{port}"
    try:
        _wait_for_head(address, proc)
        _ray_leftovers(address)  # the watching driver starts now, before any test's run
        yield address
    finally:
        stop_watcher(address)
        proc.terminate()  # `ray start --block` stops what it started on SIGTERM
        try:
            proc.wait(20)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def _wait_for_head(address: str, proc: subprocess.Popen[str]) -> None:
    host, port = address.split(":")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start failed: {proc.stderr.read() if proc.stderr else ''}")
        with socket.socket() as s:
            if s.connect_ex((host, int(port))) == 0:
                time.sleep(1.0)  # the GCS listens a moment before the raylet registers
                return
        time.sleep(0.2)
    raise RuntimeError("the Ray head did not come up in 60 s")


# What is left of the runs on the cluster, as seen by a separate driver (GCS tables):
# one line "LEFT <json>" for each line read on stdin, until stdin closes (Ray's driver
# prints the cluster's error messages on stdout too).
LEFTOVERS = """
import json, sys, ray
from topo.backends.ray.launcher import _token_auth_like_auto
_token_auth_like_auto()
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
from ray._private import state
for _ in sys.stdin:
    actors = [a["Name"] for a in state.actors().values()
              if a["State"] != "DEAD" and a.get("RayNamespace") == "topo"]
    groups = [g["placement_group_id"] for g in state.state.placement_group_table().values()
              if g["state"] != "REMOVED"]
    print("LEFT", json.dumps({"actors": actors, "groups": groups}), flush=True)
"""

_watchers: dict[str, subprocess.Popen[str]] = {}  # cluster address -> its watching driver


def _ray_leftovers(address: str) -> dict[str, list[str]]:
    """Live actors of topo's namespace and placement groups on the cluster at
    ``address``, from one driver kept for all the module's checks (a driver's start
    costs a second)."""
    watcher = _watchers.get(address)
    if watcher is None or watcher.poll() is not None:
        watcher = _watchers[address] = subprocess.Popen(
            [sys.executable, "-c", LEFTOVERS, address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    assert watcher.stdin is not None and watcher.stdout is not None
    watcher.stdin.write("?\n")
    watcher.stdin.flush()
    while not (line := watcher.stdout.readline()).startswith("LEFT "):
        assert line, "the watching driver ended"
    found: dict[str, list[str]] = json.loads(line.removeprefix("LEFT "))
    return found


def stop_watcher(address: str) -> None:
    watcher = _watchers.pop(address, None)
    if watcher is not None:
        if watcher.stdin is not None:
            watcher.stdin.close()
        try:
            watcher.wait(10)
        except subprocess.TimeoutExpired:
            watcher.kill()
            watcher.wait()


def _task_workers() -> list[str]:
    """Processes of this machine still running a topo task (``ray::topo:<instance>``)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith("ray::topo:"):
                found.append(f"{entry} {cmd.strip()}")
    return found


def assert_nothing_left(address: str | None) -> None:
    deadline = time.monotonic() + 15
    while True:
        left: dict[str, Any] = {"workers": _task_workers()}
        if address is not None:
            left.update(_ray_leftovers(address))
        if not any(left.values()):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the run left this behind on Ray: {left}")
        time.sleep(0.1)


def ray_args(address: str, runs_dir: Path, spec: Path, *more: str) -> tuple[str, ...]:
    return (
        "run",
        "--json",
        "--runs-dir",
        str(runs_dir),
        str(spec),
        *more,
        "--backend",
        "ray",
        "--address",
        address,
    )


# ----- the same results as the local backend, for every spec ----------------------------


def _shared_value_25_times(doc: dict[str, Any]) -> None:
    assert [doc["processes"][f"adder[{i}]"]["result"] for i in range(4)] == [25] * 4
    assert doc["processes"]["averager"]["result"] == 0.25
    assert doc["state"] == {"total": 25.0, "hits": 100, "mean": 0.25}


# Specs whose every step takes a lock and updates a shared value: on Ray each is several
# calls to the hub, seconds for the spec's counts; the same checks on smaller ones. The
# README's command runs the pipeline whole (below).
SMALLER_ON_RAY: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Any]], None]]] = {
    "pipeline": (
        ("--set", "params.items=200"),
        lambda doc: check_pipeline(doc, items=200, workers=4),
    ),
    "shared_value": (
        ("--set", "processes.adder.args.times=25"),
        _shared_value_25_times,
    ),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_spec_runs_on_ray(run_topo: RunTopo, head: str, tmp_path: Path, spec: Path) -> None:
    more, expect = SMALLER_ON_RAY.get(spec.stem, ((), EXPECTATIONS[spec.stem]))
    run = run_topo(*ray_args(head, tmp_path, spec, *more), timeout=80)
    doc = run.ok()
    assert doc["backend"] == "ray"
    assert doc["cluster"]["address"] == head
    assert set(doc["cluster"]["nodes"]) == set(doc["processes"])
    expect(doc)
    assert_nothing_left(head)


@pytest.mark.timeout(120)
def test_readme_command_starts_and_stops_a_local_ray(run_topo: RunTopo, tmp_path: Path) -> None:
    """``topo run specs/pipeline.yaml --backend ray``: a Ray for the run, stopped after
    it (the fixture fails the test if any process of topo's session is left)."""
    spec = REPO / "specs" / "pipeline.yaml"
    run = run_topo(
        "run", "--json", "--runs-dir", str(tmp_path), str(spec), "--backend", "ray", timeout=110
    )
    doc = run.ok()
    EXPECTATIONS["pipeline"](doc)
    assert doc["backend"] == "ray" and doc["cluster"]["address"] == "local"
    record = json.loads((Path(doc["run_dir"]) / "run.json").read_text())
    assert record["backend"] == "ray"
    assert record["cluster"]["ray_version"]
    assert_nothing_left(None)


@pytest.mark.timeout(120)
def test_sweeps_and_reruns_take_the_backend(run_topo: RunTopo, head: str, tmp_path: Path) -> None:
    """--backend on a sweep runs every point on Ray; on rerun, it runs the record again
    there (each run's record says where it ran)."""
    spec = REPO / "specs" / "pipeline.yaml"
    where = ("--backend", "ray", "--address", head)
    sweep = run_topo(
        "run",
        "--json",
        "--runs-dir",
        str(tmp_path),
        str(spec),
        "--sweep",
        "params.workers=1,2",
        "--set",
        "params.items=50",
        *where,
        timeout=110,
    )
    assert sweep.returncode == 0, str(sweep)
    records = sorted(tmp_path.glob("pipeline/sweep-*/pipeline/*/run.json"))
    assert len(records) == 2, records
    assert {json.loads(r.read_text())["backend"] for r in records} == {"ray"}
    rerun = run_topo(
        "rerun",
        "--json",
        "--runs-dir",
        str(tmp_path),
        str(records[0].parent),
        *where,
        timeout=80,
    )
    doc = rerun.ok()
    assert doc["backend"] == "ray"
    assert doc["processes"]["collector"]["result"]["count"] == 50
    assert_nothing_left(head)


def test_topo_backend_variable_selects_ray(
    run_topo: RunTopo, head: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOPO_BACKEND", "ray")
    monkeypatch.setenv("TOPO_ADDRESS", head)
    run = run_topo("run", "--json", "--no-record", str(REPO / "specs" / "event.yaml"))
    assert run.ok()["backend"] == "ray"


# ----- the same supervision ------------------------------------------------------------


def fault(run_topo: RunTopo, head: str, tmp_path: Path, name: str, *more: str) -> TopoRun:
    run = run_topo(*ray_args(head, tmp_path, FAULTS / f"{name}.yaml", *more), timeout=80)
    assert run.doc is not None, str(run)
    # the targets' own tracebacks come prefixed with their name; none from topo or Ray
    assert not [line for line in run.stderr.splitlines() if line.startswith("Traceback")], str(run)
    assert_nothing_left(head)
    return run


def states(doc: dict[str, Any]) -> dict[str, tuple[str, int | None]]:
    return {n: (r["state"], r["exit_code"]) for n, r in doc["processes"].items()}


@pytest.mark.timeout(90)
def test_a_failure_stops_the_others_and_keeps_results(
    run_topo: RunTopo, head: str, tmp_path: Path
) -> None:
    run = fault(run_topo, head, tmp_path, "raises")
    assert run.returncode == 1, str(run)
    doc = run.doc
    assert doc["status"] == "failed"
    assert doc["processes"]["finisher"]["result"] == 42
    assert doc["processes"]["boom"]["state"] == "failed"
    assert "ValueError: kaboom" in doc["processes"]["boom"]["error"]
    assert states(doc)["sleeper"] == ("stopped", -15), str(run)  # not killed: see task.py


@pytest.mark.timeout(90)
def test_sys_exit_gives_its_code(run_topo: RunTopo, head: str, tmp_path: Path) -> None:
    run = fault(run_topo, head, tmp_path, "exit_code", "--set", "processes.quitter.args.code=7")
    assert run.returncode == 1, str(run)
    assert states(run.doc)["quitter"] == ("failed", 7)


@pytest.mark.timeout(90)
def test_a_killed_worker_is_a_failure_that_names_the_node(
    run_topo: RunTopo, head: str, tmp_path: Path
) -> None:
    run = fault(run_topo, head, tmp_path, "killed")
    assert run.returncode == 1, str(run)
    assert states(run.doc)["victim"] == ("killed", -9), str(run)
    assert "victim on node " in run.stderr, str(run)


@pytest.mark.timeout(90)
def test_restart_on_failure(run_topo: RunTopo, head: str, tmp_path: Path) -> None:
    run = fault(run_topo, head, tmp_path, "restart_succeeds")
    assert run.returncode == 0, str(run)
    flaky = run.doc["processes"]["flaky"]
    assert (flaky["restarts"], flaky["result"]) == (1, "second try")


@pytest.mark.timeout(90)
def test_run_timeout_is_exit_4(run_topo: RunTopo, head: str, tmp_path: Path) -> None:
    # The spec's 1.5 s is for local processes: a Ray task can take more than that to be
    # scheduled on a worker of a loaded 2-core machine (seen once in a full suite), and
    # the finisher must return before the run's timeout.
    run = fault(run_topo, head, tmp_path, "run_timeout", "--set", "timeout=4")
    assert run.returncode == 4, str(run)
    assert run.doc["processes"]["finisher"]["result"] == 42


@pytest.mark.timeout(90)
def test_process_timeout_fails_the_run(run_topo: RunTopo, head: str, tmp_path: Path) -> None:
    run = fault(run_topo, head, tmp_path, "process_timeout")
    assert run.returncode == 4, str(run)
    assert run.doc["message"] == "slow ran past its timeout of 1.5s", str(run)
    # Both sleep in one long time.sleep: ray.cancel stops them there, as SIGTERM does
    # locally, not the kill at the end of the grace period.
    assert states(run.doc) == {"slow": ("timeout", -15), "other": ("stopped", -15)}, str(run)


@pytest.mark.timeout(90)
def test_deadlock_is_found_from_the_hub(run_topo: RunTopo, head: str, tmp_path: Path) -> None:
    run = fault(run_topo, head, tmp_path, "lock_order")
    assert run.returncode == 3, str(run)
    assert run.doc["status"] == "deadlock"
    assert "blocked in acquire() on" in run.doc["message"], str(run)


@pytest.mark.timeout(90)
def test_pipe_reader_sees_eof_when_the_writer_leaves(
    run_topo: RunTopo, head: str, tmp_path: Path
) -> None:
    run = fault(run_topo, head, tmp_path, "pipe_eof")
    assert run.returncode == 0, str(run)


@pytest.mark.timeout(90)
def test_what_was_in_flight_is_kept(run_topo: RunTopo, head: str, tmp_path: Path) -> None:
    run = fault(run_topo, head, tmp_path, "leftovers")
    doc = run.doc
    assert doc["undelivered"], str(run)
    from topo import undelivered

    kept = undelivered(doc["run_dir"])
    assert {k: len(v) for k, v in kept.items()} == doc["undelivered"]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_signals_cancel_every_task(
    start_topo: StartTopo, head: str, tmp_path: Path, signum: int
) -> None:
    live = start_topo(
        *ray_args(
            head, tmp_path, FAULTS / "many_sleepers.yaml", "--set", "processes.sleeper.replicas=3"
        )
    )
    live.wait_for("sleeper[2] | ready", timeout=60)
    live.signal(signum, group=True)
    run = live.finish()
    assert run.returncode == (130 if signum == signal.SIGINT else 143), str(run)
    assert "Traceback" not in run.stderr, str(run)
    assert_nothing_left(head)


@pytest.mark.timeout(60)
def test_a_cluster_too_small_fails_at_once(run_topo: RunTopo, head: str, tmp_path: Path) -> None:
    spec = tmp_path / "big.yaml"
    spec.write_text("processes:\n  hog:\n    target: faults:answer\n    resources: {cpus: 64}\n")
    (tmp_path / "faults.py").write_text((FAULTS / "faults.py").read_text())
    started = time.monotonic()
    run = run_topo(*ray_args(head, tmp_path, spec))
    assert run.returncode == 2, str(run)
    assert "needs 64 CPUs, the cluster has 2" in run.stderr, str(run)
    assert time.monotonic() - started < 30
    assert_nothing_left(head)


# ----- the same semantics ----------------------------------------------------------------

# What the targets of faults/semantics.yaml observe (each observation is True when
# multiprocessing's rule held: queue.Full, EOFError, a lock not taken...), and what the
# run leaves in its shared state.
SEMANTICS: dict[str, Any] = {
    "solo": {
        "put_nowait_full": True,
        "put_timeout_full": True,
        "full": [2, True, False],
        "got": ["a", "b"],
        "get_timeout_empty": True,
        "get_nowait_empty": True,
        "emptied": [0, False, True],
        "simple_empty_after_put": False,
        "simple_got": [1, [2]],
        "simple_empty_after_get": True,
        "own_job": "job",
        "own_task_done_too_many": True,
        "plain": 1.5,
        "plain_after": 2.5,
        "arr": [1, 4, [2, 3], 4, [1, 2, 3, 4]],
        "arr_after": [10, 20, 30, 5],
        "arr_wrong_size": True,
        "arr_out_of_range": True,
        "dict": [1, 0, True, False, 3, 1, ["b", "c"], 4],
        "dict_missing": True,
        "list": [1, [2, 3], 4, 4, 2, True],
        "list_after": [0, 10, 2, 3],
        "list_out_of_range": True,
        "ns": [1, "why", False, "default"],
        "ns_deleted": False,
        "rlock_twice": [True, True],
        "rlock_other_thread": {"acquire": False, "release": True},
        "rlock_released_too_often": True,
        "sem": [True, True, False],
        "sem_value": 0,
        "sem_value_after": 3,
        "bsem": [True, False, False],
        "bsem_released_too_often": True,
        "bsem_value": 1,
        "event": [False, False, True],
        "event_set": [True, True, True],
        "event_cleared": [False, False],
    },
    "counting[0]": 40,
    "counting[1]": 40,
    "counting[2]": 40,
    "producer": {"joined": True, "done_when_joined": 3},
    "consumer": {"got": [0, 1, 2], "task_done_too_many": True},
    "writer": 5,
    "reader": {
        "poll_before": [False, True],
        "poll_after": True,
        "got": [0, 1, 2, {"a": [1, 2]}],
        "got_bytes": "raw",
        "eof": True,
        "poll_at_eof": True,
    },
    "holder": "released",
    "contender": {
        "timeout": [False, True],
        "nonblocking": False,
        "eventually": True,
        "release_unlocked": True,
    },
    "waiter": {
        "wait_unlocked": True,
        "wait_timeout": [False, True],
        "wait_keeps_the_lock": True,
        "wait_for": True,
        "flag": 1,
    },
    "notifier": {"notify_unlocked": True},
    "party[0]": {
        "parties": 2,
        "indexes": [0, 1],
        "reset_breaks_the_waiter": True,
        "after_reset": True,
        "timeout_breaks": [True, True],
        "broken": True,
        "broken_at_once": True,
        "mended": False,
        "aborted": [True, True],
    },
    "party[1]": {"parties": 2, "after_reset": True},
}
SEMANTICS_STATE: dict[str, Any] = {
    "counter": 120,  # 3 x 40 increments under the value's lock: none lost
    "done": 3,
    "flag": 1,
    "plain": 2.5,
    "arr": [10, 20, 30, 5],
    "table": {"b": 2, "c": 3, "d": 4},
    "items": [0, 10, 2, 3],
    "ns": {"y": "why"},
    "indexes": [0, 1],
}


def _observed(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return {name: r["result"] for name, r in doc["processes"].items()}, doc["state"]


@pytest.mark.timeout(150)
def test_semantics_match_the_local_backend(run_topo: RunTopo, head: str, tmp_path: Path) -> None:
    spec = FAULTS / "semantics.yaml"
    local = run_topo("run", "--json", "--runs-dir", str(tmp_path / "local"), str(spec)).ok()
    assert local["backend"] == "local"
    results, state = _observed(local)
    for name, expected in SEMANTICS.items():  # one instance at a time: a readable diff
        assert results[name] == expected, f"local {name}"
    assert set(results) == set(SEMANTICS)
    assert state == SEMANTICS_STATE
    assert local["undelivered"] == {}

    run = run_topo(*ray_args(head, tmp_path / "ray", spec), timeout=110)
    assert not [line for line in run.stderr.splitlines() if line.startswith("Traceback")], str(run)
    on_ray = run.ok()
    assert on_ray["backend"] == "ray"
    results_on_ray, state_on_ray = _observed(on_ray)
    for name, expected in results.items():
        assert results_on_ray[name] == expected, f"ray {name}"
    assert results_on_ray == results
    assert state_on_ray == state
    assert on_ray["undelivered"] == local["undelivered"]
    assert_nothing_left(head)


@pytest.mark.timeout(120)
def test_kill_9_of_topo_stops_the_local_ray_it_started(
    start_topo: StartTopo, tmp_path: Path
) -> None:
    """Without a cluster, topo starts a local Ray: its guardian stops every process of
    it (Ray's agents outlive a killed driver by minutes otherwise) and marks the
    record killed. The fixture fails the test if anything of topo's session is left."""
    live = start_topo(
        "run",
        "--json",
        "--runs-dir",
        str(tmp_path),
        str(FAULTS / "many_sleepers.yaml"),
        "--set",
        "processes.sleeper.replicas=2",
        "--backend",
        "ray",
    )
    live.wait_for("sleeper[1] | ready", timeout=60)
    live.signal(signal.SIGKILL)
    live.finish()
    assert_nothing_left(None)
    (record,) = tmp_path.glob("many_sleepers/*/run.json")
    assert marked_record(record, within=10)["status"] == "killed"


@pytest.mark.timeout(90)
def test_the_bottleneck_is_found_on_ray_too(run_topo: RunTopo, head: str, tmp_path: Path) -> None:
    """The timeline comes from what the supervisor sees: the hub's waiters on Ray."""
    spec = FAULTS / "stages.yaml"
    run = run_topo(
        *ray_args(head, tmp_path, spec, "--set", "params.collector_delay=0.05"), timeout=80
    )
    doc = run.ok()
    assert doc["bottleneck"]["process"] == "collector", doc["bottleneck"]
    assert doc["channels"]["results"]["peak_depth"] == 4
    assert (Path(doc["run_dir"]) / "trace.json").exists()
    assert_nothing_left(head)
