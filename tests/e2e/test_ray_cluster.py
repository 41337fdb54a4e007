"""The Ray backend across the nodes of a cluster: a head and two worker nodes on this
machine, started as docs/ray.md shows (``ray start --head``, then ``ray start
--address`` twice, with the custom resources ``n0`` and ``n1`` that specs pin their
processes to). Token authentication is off for this cluster and its drivers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

pytest.importorskip("ray")

from e2e.test_ray import (
    SMALLER_ON_RAY,
    _free_port,
    _ray_leftovers,
    _wait_for_head,
    assert_nothing_left,
    ray_args,
    stop_watcher,
)

if TYPE_CHECKING:
    from e2e.conftest import LiveTopo, TopoRun

HERE = Path(__file__).resolve().parent
FAULTS = HERE / "faults"
REPO = HERE.parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
STORE = "--object-store-memory=80000000"


def _ray_start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [RAY, "start", "--block", "--num-cpus=1", STORE, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        start_new_session=True,  # each node's processes form a group: killed together
    )


def _stop(proc: subprocess.Popen[str], how: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, how) if how == signal.SIGKILL else proc.terminate()
    try:
        proc.wait(20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


class Cluster:
    def __init__(self) -> None:
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        self.head = _ray_start(
            "--head", f"--port={port}", "--include-dashboard=false", "--disable-usage-stats"
        )
        _wait_for_head(self.address, self.head)
        self.nodes: dict[str, subprocess.Popen[str]] = {}
        for count, name in enumerate(("n0", "n1"), start=2):  # one at a time: their ports
            self.nodes[name] = _ray_start(
                f"--address={self.address}", f'--resources={{"{name}": 1}}'
            )
            self._wait_for_nodes(count)
        _ray_leftovers(self.address)  # the watching driver starts before any test's run

    def _wait_for_nodes(self, count: int) -> None:
        probe = (
            "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR');"
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = subprocess.run(
                [sys.executable, "-c", probe, self.address],
                env=ENV,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if done.stdout.strip() == str(count):
                return
            time.sleep(1)
        raise RuntimeError(f"the cluster did not reach {count} nodes")

    def remove(self, node: str) -> None:
        """As a machine that is lost: every process of the node killed at once."""
        _stop(self.nodes.pop(node), signal.SIGKILL)

    def stop(self) -> None:
        stop_watcher(self.address)
        for proc in self.nodes.values():
            _stop(proc)
        _stop(self.head)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    started = Cluster()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(autouse=True)
def no_token_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")


@pytest.mark.timeout(120)
def test_producer_and_consumer_on_two_nodes(
    run_topo: Callable[..., TopoRun], cluster: Cluster, tmp_path: Path
) -> None:
    run = run_topo(*ray_args(cluster.address, tmp_path, FAULTS / "across_nodes.yaml"), timeout=100)
    doc = run.ok()
    assert doc["processes"]["consumer"]["result"] == sum(range(500))
    nodes = doc["cluster"]["nodes"]
    assert nodes["producer"]["node_id"] != nodes["consumer"]["node_id"], nodes
    assert_nothing_left(cluster.address)


@pytest.mark.timeout(120)
def test_the_pipeline_spec_across_the_cluster(
    run_topo: Callable[..., TopoRun], cluster: Cluster, tmp_path: Path
) -> None:
    more, expect = SMALLER_ON_RAY["pipeline"]  # test_ray.py's README test runs it whole
    spec = REPO / "specs" / "pipeline.yaml"
    run = run_topo(*ray_args(cluster.address, tmp_path, spec, *more), timeout=100)
    doc = run.ok()
    expect(doc)
    assert len({n["node_id"] for n in doc["cluster"]["nodes"].values()}) >= 1


@pytest.mark.timeout(120)
def test_a_node_lost_mid_run_is_a_failure_naming_it(
    start_topo: Callable[..., LiveTopo], cluster: Cluster, tmp_path: Path
) -> None:
    """Last in this module: the cluster has one node less afterwards."""
    live = start_topo(*ray_args(cluster.address, tmp_path, FAULTS / "node_lost.yaml"))
    live.wait_for("doomed | ready", timeout=60)
    live.wait_for("survivor | ready", timeout=60)
    removed = time.monotonic()
    cluster.remove("n1")
    run = live.finish(timeout=90)
    assert run.returncode == 1, str(run)
    assert run.doc is not None and run.doc["status"] == "failed", str(run)
    assert "processes" in run.doc, str(run)
    assert run.doc["processes"]["doomed"]["state"] == "killed", str(run)
    assert "the Ray worker running doomed on node" in run.stderr, str(run)
    assert run.ended_at - removed < 60, "a lost node must not hang the run"
