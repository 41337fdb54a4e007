"""The timeline from samples given by hand: shares, channel flow, the bottleneck, the
trace's shape and its cap."""

from __future__ import annotations

from topo import timeline
from topo.deadlock import Wait
from topo.timeline import Timeline


def pipeline() -> Timeline:
    return Timeline(
        kinds={"tasks": "queue", "gate": "lock"},
        process_of={"producer": "producer", "worker[0]": "worker", "worker[1]": "worker"},
        feeders={"tasks": {"writers": ["producer"], "readers": ["worker"]}},
    )


def test_shares_and_flow_from_samples() -> None:
    t = pipeline()
    everyone = ["producer", "worker[0]", "worker[1]"]
    starved = {"worker[0]": Wait("get", "tasks"), "worker[1]": Wait("get", "tasks")}
    t.observe(0.0, everyone, starved, {"tasks": 0})
    t.observe(3.0, everyone, {"worker[0]": Wait("acquire", "gate")}, {"tasks": 2})
    t.finish(4.0)
    shares = t.shares()
    assert shares["producer"] == {"running": 1.0, "channels": 0.0, "locks": 0.0}
    assert shares["worker[0]"] == {"running": 0.0, "channels": 0.75, "locks": 0.25}
    assert shares["worker[1]"] == {"running": 0.25, "channels": 0.75, "locks": 0.0}
    flow = t.channels()
    assert flow["tasks"]["blocked_s"] == {"worker": {"get": 6.0}}
    assert flow["tasks"]["peak_depth"] == 2
    assert flow["tasks"]["mean_depth"] == 0.5  # 0 for 3 s, then 2 for 1 s
    verdict = t.bottleneck()
    assert verdict is not None and verdict["process"] == "producer"
    assert verdict["reason"] == (
        "producer ran 100% of the time while worker[0..1] waited 75% in get() on 'tasks': "
        "producer limits this run"
    )


def test_when_nobody_waits_the_longest_worker_limits_the_run_and_one_process_has_none() -> None:
    t = pipeline()
    t.observe(0.0, ["producer", "worker[0]", "worker[1]"], {})
    t.observe(1.0, ["worker[0]", "worker[1]"], {})
    t.finish(3.0)
    verdict = t.bottleneck()
    assert verdict is not None and verdict["process"] == "worker"
    assert verdict["reason"] == (
        "no process waited long on another: worker[0..1] ran longest (3.00 s), "
        "its own work limits this run"
    )
    alone = Timeline(kinds={}, process_of={"a[0]": "a", "a[1]": "a"})
    alone.observe(0.0, ["a[0]", "a[1]"], {"a[0]": Wait("get", "q")})
    alone.finish(1.0)
    assert alone.bottleneck() is None


def test_trace_has_a_track_per_instance_slices_instants_and_counters() -> None:
    t = pipeline()
    t.instant(0.0, "start", "producer")
    t.observe(0.0, ["producer"], {}, {"tasks": 1})
    t.observe(0.5, ["producer"], {"producer": Wait("put", "tasks")}, {"tasks": 1})
    t.instant(1.0, "exit", "producer")
    t.finish(1.0)
    events = t.trace()["traceEvents"]
    names = {e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    assert names == {"producer", "worker[0]", "worker[1]"}
    slices = [(e["name"], e["ts"], e["dur"]) for e in events if e["ph"] == "X"]
    assert slices == [("running", 0.0, 500000), ("put() on 'tasks'", 500000.0, 500000)]
    assert [e["name"] for e in events if e["ph"] == "i"] == ["start", "exit"]
    counters = [e for e in events if e["ph"] == "C"]
    assert len(counters) == 1  # a counter event only when the depth changes


def test_a_long_run_is_capped_and_says_so(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(timeline, "MAX_EVENTS", 10)
    t = pipeline()
    for i in range(20):
        t.observe(float(i), ["producer"], {"producer": Wait("put", "tasks")} if i % 2 else {})
    t.finish(20.0)
    doc = t.trace()
    assert len([e for e in doc["traceEvents"] if e["ph"] != "M"]) == 10
    assert "capped" in doc["otherData"]
    assert t.shares()["producer"]["running"] == 0.5  # the shares still count everything


def test_live_shares_count_the_state_an_instance_is_in() -> None:
    t = pipeline()
    t.observe(0.0, ["producer"], {}, {"tasks": 3})
    t.observe(1.0, ["producer"], {"producer": Wait("put", "tasks")}, {"tasks": 4})
    assert t.shares()["producer"]["running"] == 1.0  # only what has ended
    assert t.shares(now=4.0)["producer"] == {"running": 0.25, "channels": 0.75, "locks": 0.0}
    assert t.current_depths() == {"tasks": 4}
