"""Pictures of a topology (topo/render.py): Mermaid and DOT text, and Graphviz rendering."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import topo.render
from topo.api import load
from topo.render import RenderError, render_file, to_dot, to_mermaid

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
PIPELINE = ROOT / "specs" / "pipeline.yaml"

PIPELINE_MERMAID = """\
flowchart LR
    p_producer["producer"]
    p_worker["worker \u00d74"]
    p_collector["collector"]
    c_tasks>"tasks<br>queue, maxsize 64"]
    c_results>"results<br>queue"]
    c_total[("total<br>value q")]
    p_producer -->|out| c_tasks
    c_tasks -->|inbox| p_worker
    p_worker -->|outbox| c_results
    p_worker <-.-> c_total
    c_results -->|inbox| p_collector
    classDef process fill:#dbeafe,stroke:#1d4ed8
    class p_producer,p_worker,p_collector process
    classDef channel fill:#dcfce7,stroke:#15803d
    class c_tasks,c_results channel
    classDef state fill:#e0e7ff,stroke:#4338ca
    class c_total state
"""

PIPELINE_DOT = """\
digraph "pipeline" {
    rankdir=LR;
    node [fontname="Helvetica", fontsize=11, style=filled];
    edge [fontname="Helvetica", fontsize=9];
    p_producer [label="producer", shape=box, fillcolor="#dbeafe", color="#1d4ed8"];
    p_worker [label="worker \u00d74", shape=box3d, fillcolor="#dbeafe", color="#1d4ed8"];
    p_collector [label="collector", shape=box, fillcolor="#dbeafe", color="#1d4ed8"];
    c_tasks [label="tasks\\nqueue, maxsize 64", shape=cds, fillcolor="#dcfce7", color="#15803d"];
    c_results [label="results\\nqueue", shape=cds, fillcolor="#dcfce7", color="#15803d"];
    c_total [label="total\\nvalue q", shape=cylinder, fillcolor="#e0e7ff", color="#4338ca"];
    p_producer -> c_tasks [label="out"];
    c_tasks -> p_worker [label="inbox"];
    p_worker -> c_results [label="outbox"];
    p_worker -> c_total [dir=both, style=dashed];
    c_results -> p_collector [label="inbox"];
}
"""


def _graphviz_or_its_hint(out: Path) -> bool:
    """Whether Graphviz is here. Without it (never on CI, which installs it) a test checks
    instead that rendering fails with the install hint, so it asserts on every machine."""
    if shutil.which("dot") is not None:
        return True
    assert not os.environ.get("CI"), "Graphviz 'dot' is not installed on CI"
    with pytest.raises(RenderError, match="apt-get install graphviz"):
        render_file("digraph {}", out)
    return False


def test_pipeline_mermaid() -> None:
    assert to_mermaid(load(PIPELINE, seed=0)) == PIPELINE_MERMAID


def test_pipeline_dot() -> None:
    assert to_dot(load(PIPELINE, seed=0)) == PIPELINE_DOT


def test_replicas_follow_overrides() -> None:
    plan = load(PIPELINE, ["params.workers=7"], seed=0)
    assert 'p_worker["worker \u00d77"]' in to_mermaid(plan)
    assert 'label="worker \u00d77"' in to_dot(plan)


def test_locks_and_conditions_have_their_own_shapes() -> None:
    plan = load(ROOT / "specs" / "condition.yaml", seed=0)
    mermaid = to_mermaid(plan)
    assert 'l_mutex{{"mutex<br>lock"}}' in mermaid
    assert 'c_stage[("stage<br>value i, no lock")]' in mermaid
    assert "p_waiter <-.-> l_ready" in mermaid
    assert "l_ready -.-|over| l_mutex" in mermaid
    dot = to_dot(plan)
    assert 'l_ready [label="ready\\ncondition", shape=hexagon' in dot
    assert 'l_ready -> l_mutex [style=dotted, arrowhead=none, label="over"];' in dot


def test_after_and_barrier_details() -> None:
    mermaid = to_mermaid(load(ROOT / "specs" / "shared_value.yaml", seed=0))
    assert "p_adder -.->|after| p_averager" in mermaid
    barrier = to_mermaid(load(ROOT / "specs" / "barrier.yaml", seed=0))
    assert 'l_start{{"start<br>barrier, 4 parties"}}' in barrier


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_renders_to_text(spec: Path) -> None:
    plan = load(spec, seed=0)
    mermaid, dot = to_mermaid(plan), to_dot(plan)
    for name in plan.spec.processes:
        assert f"p_{name}" in mermaid
        assert f"p_{name} [" in dot
    assert dot.startswith("digraph ") and dot.rstrip().endswith("}")


@pytest.mark.parametrize("suffix", [".svg", ".png"])
def test_render_file(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"pipeline{suffix}"
    if not _graphviz_or_its_hint(out):
        return
    render_file(to_dot(load(PIPELINE, seed=0)), out)
    data = out.read_bytes()
    if suffix == ".svg":
        assert b"<svg" in data and "worker \u00d74".encode() in data
    else:
        assert data.startswith(b"\x89PNG")


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_renders_with_graphviz(spec: Path, tmp_path: Path) -> None:
    if _graphviz_or_its_hint(tmp_path / "out.svg"):
        render_file(to_dot(load(spec, seed=0)), tmp_path / "out.svg")


def test_render_file_without_graphviz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topo.render.shutil, "which", lambda _name: None)
    with pytest.raises(RenderError, match="apt-get install graphviz"):
        render_file("digraph {}", tmp_path / "out.svg")


def test_render_file_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"must end in \.svg, \.png, \.pdf"):
        render_file("digraph {}", tmp_path / "out.gif")


def test_render_file_bad_dot(tmp_path: Path) -> None:
    if not _graphviz_or_its_hint(tmp_path / "out.svg"):
        return
    with pytest.raises(RenderError, match="Graphviz could not render"):
        render_file("digraph { this is not dot", tmp_path / "out.svg")
