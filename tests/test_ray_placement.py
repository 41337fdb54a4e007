"""What the Ray launcher asks of a cluster, from the plan alone (no Ray started)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ray")

from topo.api import load
from topo.backends.ray.launcher import _bundle, _declared, _missing

SPEC = """\
channels:
  q: {kind: queue, maxsize: 4}
  frames: {kind: queue, transport: shm, slots: 3}
  image: {kind: ndarray, shape: [2, 2]}
  total: {kind: value, type: c, init: "a"}
  hist: {kind: array, type: i, size: 3}
locks:
  gate: {kind: semaphore, value: 2}
  cv: {kind: condition, lock: l}
  l: rlock
  meet: barrier
processes:
  light:
    target: t:f
    uses: {q: q, gate: gate, cv: cv, meet: meet, total: total, hist: hist, frames: frames}
  heavy:
    target: t:f
    replicas: 2
    resources: {cpus: 2, gpus: 0.5, memory: 1GiB, custom: {n0: 1}}
    node: 0123abcd
    uses: {meet: meet}
  painter:
    target: t:f
    uses: {image: image}
"""


@pytest.fixture
def plan(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "t.py").write_text("def f(**kw):\n    return 0\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    return load(spec)


def test_bundles_follow_resources_and_node(plan) -> None:  # type: ignore[no-untyped-def]
    by_name = {i.name: i for i in plan.instances}
    ips = {"0123abcd": "10.0.0.9"}
    assert _bundle(plan, by_name["light"], "10.0.0.1", ips) == {"CPU": 0.01}
    assert _bundle(plan, by_name["heavy[1]"], "10.0.0.1", ips) == {
        "CPU": 2.0,
        "GPU": 0.5,
        "memory": float(1 << 30),
        "n0": 1.0,
        "node:10.0.0.9": 0.001,
    }
    # real shared memory, made by topo: its users run on topo's node
    assert _bundle(plan, by_name["painter"], "10.0.0.1", ips) == {
        "CPU": 0.01,
        "node:10.0.0.1": 0.001,
    }


def test_the_hub_holds_every_channel_and_lock_but_shared_arrays(plan) -> None:  # type: ignore[no-untyped-def]
    declared = _declared(plan)
    assert "image" not in declared  # an ndarray stays in this node's shared memory
    assert declared["q"] == {"kind": "queue", "maxsize": 4}
    assert declared["frames"] == {"kind": "queue", "maxsize": 3}  # shm: its slots bound it
    assert declared["total"] == {"kind": "value", "init": b"a"}
    assert declared["hist"] == {"kind": "array", "init": [0, 0, 0]}
    assert declared["gate"] == {"kind": "semaphore", "value": 2}
    assert declared["cv"] == {"kind": "condition", "lock": "l"}
    assert declared["meet"] == {"kind": "barrier", "parties": 3, "timeout": None}


def test_what_is_missing_reads_as_a_sentence() -> None:
    assert _missing("CPU", 64, 2) == "the run needs 64 CPUs, the cluster has 2"
    assert _missing("n1", 1, 0) == "the run needs 1 of 'n1', the cluster has 0"
    assert "node 10.0.0.9" in _missing("node:10.0.0.9", 0.001, 0)
