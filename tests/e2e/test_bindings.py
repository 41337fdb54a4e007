"""Per-instance bindings: each replica of a process can bind its own channel."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import TopoRun

TARGETS = """
def fan_out(first, second, n: int) -> int:
    for i in range(n):
        (first if i % 2 == 0 else second).put(i)
    first.put(None)
    second.put(None)
    return n


def drain(inbox) -> list:
    got = []
    while (item := inbox.get()) is not None:
        got.append(item)
    return got
"""

SPEC = """\
channels: {lane0: queue, lane1: queue}
processes:
  splitter: {target: lanes:fan_out, args: {n: 6}, outputs: {first: lane0, second: lane1}}
  lane: {target: lanes:drain, replicas: 2, inputs: {inbox: "lane${replica}"}}
"""


@pytest.mark.timeout(60)
def test_each_replica_reads_its_own_lane(run_topo: Callable[..., TopoRun], tmp_path: Path) -> None:
    (tmp_path / "lanes.py").write_text(TARGETS)
    spec = tmp_path / "lanes.yaml"
    spec.write_text(SPEC)
    doc = run_topo("run", "--json", "-q", "--no-record", str(spec)).ok()
    assert {name: p["result"] for name, p in doc["processes"].items()} == {
        "splitter": 6,
        "lane[0]": [0, 2, 4],
        "lane[1]": [1, 3, 5],
    }
    assert run_topo("validate", "--strict", str(spec)).returncode == 0
