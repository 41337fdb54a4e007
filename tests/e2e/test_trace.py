"""What a run tells about where its time went: trace.json, channel flow, shares, and
the bottleneck, on topologies whose slow stage is known."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from e2e.conftest import TopoRun

STAGES = Path(__file__).resolve().parent / "faults" / "stages.yaml"
RunTopo = Callable[..., "TopoRun"]


def run_stages(run_topo: RunTopo, tmp_path: Path, slow: str, *more: str) -> dict[str, Any]:
    run = run_topo(
        "run",
        "--json",
        "--runs-dir",
        str(tmp_path),
        str(STAGES),
        "--set",
        f"params.{slow}_delay=0.05",
        *more,
    )
    doc: dict[str, Any] = run.ok()
    assert f"topo: bottleneck: {doc['bottleneck']['reason']}" in run.stderr, str(run)
    return doc


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("slow", "waits"),
    [
        ("producer", [("worker", "get", "tasks")]),  # starved workers
        # Slow workers both starve the collector and block the producer, each for nearly
        # the whole run: either wait, whichever measured longer, explains the verdict.
        ("worker", [("collector", "get", "results"), ("producer", "put", "tasks")]),
        ("collector", [("worker", "put", "results")]),  # backpressure through a bounded queue
    ],
)
def test_the_bottleneck_is_the_slow_stage(
    run_topo: RunTopo, tmp_path: Path, slow: str, waits: list[tuple[str, str, str]]
) -> None:
    doc = run_stages(run_topo, tmp_path, slow)
    verdict = doc["bottleneck"]
    assert verdict["process"] == slow, verdict
    assert (verdict["waiting"], verdict["op"], verdict["channel"]) in waits, verdict
    assert verdict["reason"].endswith(f"{slow} limits this run")
    # the slow stage ran nearly all the time; who it starved or blocked, mostly waited
    slow_names = [n for n in doc["processes"] if n.partition("[")[0] == slow]
    for name in slow_names:
        assert doc["processes"][name]["shares"]["running"] > 0.8, doc["processes"][name]
    for waiting, op, channel in waits:  # every wait it caused, measured on its channel
        blocked = doc["channels"][channel]["blocked_s"][waiting][op]
        assert blocked > 0.5, doc["channels"]  # of a run of about 1 s


def follows_the_trace_event_format(trace: dict[str, Any]) -> None:
    """The rules of the Trace Event format that viewers rely on: every event has a
    name, a phase, a pid; timed events a timestamp; complete events a duration and a
    thread; instants a scope; counters numeric values; every thread is named."""
    events = trace["traceEvents"]
    assert isinstance(events, list) and events
    named = {e["tid"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    for e in events:
        assert isinstance(e["name"], str) and e["ph"] in "XiCM" and isinstance(e["pid"], int), e
        if e["ph"] != "M":
            assert isinstance(e["ts"], int | float) and e["ts"] >= 0, e
        if e["ph"] == "X":
            assert isinstance(e["dur"], int) and e["dur"] >= 0 and e["tid"] in named, e
        if e["ph"] == "i":
            assert e["s"] in "gpt" and (e["s"] != "t" or e["tid"] in named), e
        if e["ph"] == "C":
            assert all(isinstance(v, int | float) for v in e["args"].values()), e
        if e["ph"] == "M":
            assert isinstance(e["args"]["name" if "name" in e["args"] else "sort_index"], str | int)
    json.dumps(trace)  # plain JSON, nothing else


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["auto", "mp", "socket"])  # auto takes a pipe here
def test_trace_json_is_a_chrome_trace_of_the_run(
    run_topo: RunTopo, tmp_path: Path, transport: str
) -> None:
    # Every transport is seen alike: waits in put(), depths (auto takes pipe here).
    sets = ("--set", f"channels.results.transport={transport}")
    doc = run_stages(run_topo, tmp_path, "collector", *sets)
    trace = json.loads((Path(doc["run_dir"]) / "trace.json").read_text())
    follows_the_trace_event_format(trace)
    events = trace["traceEvents"]
    threads = {e["args"]["name"]: e["tid"] for e in events if e.get("name") == "thread_name"}
    assert set(threads) == set(doc["processes"])  # one track per instance
    slices = [e for e in events if e["ph"] == "X"]
    assert all(e["dur"] >= 0 and e["tid"] in threads.values() for e in slices)
    collector = [e["name"] for e in slices if e["tid"] == threads["collector"]]
    assert "running" in collector
    worker = {e["name"] for e in slices if e["tid"] == threads["worker[0]"]}
    assert "put() on 'results'" in worker, worker
    instants = {(e["name"], e.get("tid")) for e in events if e["ph"] == "i"}
    for name, tid in threads.items():
        assert ("start", tid) in instants and ("exit", tid) in instants, name
    depths = [e["args"]["depth"] for e in events if e["ph"] == "C" and e["name"] == "depth results"]
    assert max(depths) == doc["channels"]["results"]["peak_depth"] == 4
    # run.json keeps the same as the JSON on stdout
    record = json.loads((Path(doc["run_dir"]) / "run.json").read_text())
    assert record["bottleneck"] == doc["bottleneck"]
    assert record["channels"] == doc["channels"]


@pytest.mark.timeout(60)
def test_one_process_has_no_bottleneck(run_topo: RunTopo, tmp_path: Path) -> None:
    """Replicas of one process, no channel: nobody waits on anybody."""
    spec = STAGES.parent / "answers.yaml"
    run = run_topo("run", "--json", "--runs-dir", str(tmp_path), str(spec))
    doc = run.ok()
    assert doc["bottleneck"] is None
    assert "bottleneck" not in run.stderr
    assert (Path(doc["run_dir"]) / "trace.json").exists()


@pytest.mark.timeout(60)
def test_no_trace_keeps_no_timeline(run_topo: RunTopo, tmp_path: Path) -> None:
    run = run_topo(
        "run",
        "--json",
        "--runs-dir",
        str(tmp_path),
        str(STAGES),
        "--set",
        "params.producer_delay=0.02",
        "--no-trace",
    )
    doc = run.ok()
    assert doc["channels"] == {} and doc["bottleneck"] is None
    assert "bottleneck" not in run.stderr
    assert not (Path(doc["run_dir"]) / "trace.json").exists()


@pytest.mark.timeout(60)
def test_ps_and_logs_follow_a_run_from_another_terminal(
    start_topo: Callable[..., Any], run_topo: RunTopo, tmp_path: Path
) -> None:
    """docker compose's ps and logs -f: a run in progress is listed, and its output is
    followed until it ends (then `logs -f` returns by itself)."""
    import signal
    import subprocess
    import sys

    spec = STAGES.parent / "many_sleepers.yaml"
    live = start_topo(
        "run", "--runs-dir", str(tmp_path), str(spec), "--set", "processes.sleeper.replicas=2"
    )
    live.wait_for("sleeper[1] | ready")
    listed = json.loads(run_topo("ps", "--json", "--runs-dir", str(tmp_path)).stdout)
    assert [r["name"] for r in listed] == ["many_sleepers"], listed
    assert listed[0]["pid"] == live.pid and listed[0]["instances"] == ["sleeper[0]", "sleeper[1]"]
    follower = subprocess.Popen(
        [sys.executable, "-m", "topo", "logs", listed[0]["id"], "-f", "--runs-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        live.signal(signal.SIGTERM)
        live.finish()
        out, err = follower.communicate(timeout=20)  # it ends once the run has ended
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert "sleeper[0] | ready" in out and "sleeper[1] | ready" in out, out
    assert json.loads(run_topo("ps", "--json", "--runs-dir", str(tmp_path)).stdout) == []
    one = run_topo("logs", listed[0]["id"], "sleeper[1]", "--runs-dir", str(tmp_path))
    assert one.stdout == "ready\n", str(one)
    wrong = run_topo("logs", listed[0]["id"], "sleeper[9]", "--runs-dir", str(tmp_path))
    assert wrong.returncode == 2 and "no instance 'sleeper[9]'" in wrong.stderr, str(wrong)


@pytest.mark.timeout(60)
def test_the_pipeline_spec_names_its_bottleneck(run_topo: RunTopo, tmp_path: Path) -> None:
    """issue 12's "done": `topo run specs/pipeline.yaml` prints the bottleneck line."""
    spec = STAGES.parents[3] / "specs" / "pipeline.yaml"
    run = run_topo("run", "--json", "--runs-dir", str(tmp_path), str(spec))
    doc = run.ok()
    assert doc["bottleneck"]["process"] in ("producer", "worker", "collector")
    assert f"topo: bottleneck: {doc['bottleneck']['reason']}" in run.stderr
    follows_the_trace_event_format(json.loads((Path(doc["run_dir"]) / "trace.json").read_text()))


@pytest.mark.timeout(60)
def test_topo_report_last_writes_the_html_of_the_last_run(
    run_topo: RunTopo, tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    doc = run_stages(run_topo, tmp_path, "producer")
    done = run_topo("report", "last", "--runs-dir", str(tmp_path))
    assert done.returncode == 0, str(done)
    page = Path(doc["run_dir"]) / "report.html"
    assert f"topo: report written to {page}" in done.stderr
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("<svg") >= 3
    assert "producer limits this run" in text
