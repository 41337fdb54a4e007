"""The process/channel graph (topo/graph.py) and its checks (topo/checks/topology.py).

Every bad spec in tests/checks/ is validated and must give exactly the diagnostics of
``EXPECTED`` (code, line, column, message); every spec in specs/ must give none.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from topo.api import load, validate
from topo.backends.local.backend import LocalBackend
from topo.checks import REGISTRY, run_checks
from topo.graph import (
    Bound,
    bound_by,
    build_graph,
    one_cycle_per_component,
    process_view,
    waits_for,
)

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ROOT / "tests" / "checks"
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
DOCS = ROOT / "docs" / "checks.md"

EXPECTED: dict[str, list[tuple[str, int, int, str]]] = {
    "t050_pipe_end_shared.yaml": [
        (
            "T050",
            3,
            3,
            "the receiving end of one-way pipe 'numbers' is held by 2 instances "
            "(receiver[0], receiver[1]): a pipe end used by several processes at once "
            "corrupts data",
        ),
    ],
    "t051_condition_over_semaphore.yaml": [
        (
            "T051",
            4,
            34,
            "condition 'ready' is over 'gate', a semaphore: a condition needs a lock or rlock",
        ),
    ],
    "t101_bounded_queue.yaml": [
        (
            "T101",
            8,
            20,
            "channel 'log' is written by 'writer' but nothing reads it: once it holds 8 items "
            "every put() blocks forever",
        ),
    ],
    "t101_pipe.yaml": [
        (
            "T101",
            8,
            21,
            "channel 'numbers' is written by 'sender' but nothing reads it: once the OS pipe "
            "buffer under it is full every send() blocks forever",
        ),
    ],
    "t101_unbounded_queue.yaml": [
        (
            "T101",
            14,
            23,
            "channel 'results' is written by 'worker' but nothing reads it: everything put "
            "into it is lost, and a writer that has put more than a pipe buffer holds never "
            "exits, waiting for it to drain",
        ),
    ],
    "t102_read_never_written.yaml": [
        (
            "T102",
            9,
            21,
            "channel 'tasks' is read by 'worker' but nothing writes to it: readers block forever",
        ),
    ],
    "t103_bounded_loop.yaml": [
        (
            "T103",
            3,
            3,
            "bounded channels form a loop (master -> tasks -> worker -> results -> master): "
            "once they are full, every process on it blocks writing to the next and none "
            "reads again",
        ),
    ],
    "t103_self_loop.yaml": [
        (
            "T103",
            3,
            3,
            "bounded channels form a loop (crawler -> urls -> crawler): once they are full, "
            "every process on it blocks writing to the next and none reads again",
        ),
    ],
    "t104_unused.yaml": [
        (
            "T104",
            4,
            3,
            "channel 'spare' is declared but no process binds it: it is built for nothing, "
            "and whatever should flow through it never does",
        ),
        (
            "T104",
            7,
            3,
            "lock 'print_lock' is declared but no process binds it: it is built for nothing "
            "and synchronises nobody",
        ),
    ],
    "t110_barrier_parties.yaml": [
        (
            "T110",
            3,
            35,
            "barrier 'start' waits for 4 parties but only 3 instances use it: every wait() "
            "blocks forever",
        ),
        (
            "T110",
            4,
            36,
            "barrier 'finish' waits for 4 parties but only 3 instances use it: every wait() "
            "times out after 20 s and breaks the barrier",
        ),
    ],
    "t111_barrier_parties.yaml": [
        (
            "T111",
            3,
            35,
            "barrier 'start' releases 2 parties at a time but 5 instances use it: they pass "
            "in groups, not all together, and the last one waits forever",
        ),
    ],
    "t112_lonely.yaml": [
        (
            "T112",
            11,
            16,
            "event 'go' is used only by 'waiter': nothing else can set it, so its wait() "
            "blocks forever",
        ),
        (
            "T112",
            11,
            27,
            "condition 'ready' is used only by 'waiter': nothing else can notify it, so its "
            "wait() blocks forever",
        ),
        (
            "T112",
            14,
            18,
            "semaphore 'gate' is used only by 'visitor': nothing else acquires or releases "
            "it, so it limits nothing, and an acquire() past its value blocks forever",
        ),
    ],
    "t113_unlocked_value.yaml": [
        (
            "T113",
            4,
            41,
            "value 'counter' has lock: false and is written by 3 instances of 'adder' and "
            "'resetter' that share no lock: concurrent updates such as += are lost",
        ),
    ],
    "t120_after_cycle.yaml": [
        (
            "T120",
            5,
            13,
            "processes wait for one another to finish before they start: 'a', which waits "
            "for 'b', which waits for 'c', which waits for 'a', so none of them ever starts",
        ),
    ],
    "t121_after_starves.yaml": [
        (
            "T121",
            14,
            13,
            "process 'reader' reads channel 'tasks', but its only writer 'writer' starts "
            "after 'reader' finishes: 'reader' blocks forever and 'writer' never starts",
        ),
        (
            "T121",
            24,
            13,
            "process 'auditor' reads channel 'notes', but its only writer 'clerk' starts "
            "after 'auditor' finishes ('clerk', which waits for 'middle', which waits for "
            "'auditor'): 'auditor' blocks forever and 'clerk' never starts",
        ),
    ],
    "t122_restart.yaml": [
        (
            "T122",
            12,
            14,
            "process 'worker' restarts on failure and holds an end of pipe 'line': an "
            "instance that dies mid-message leaves half a message behind, so the other end "
            "reads garbage or blocks",
        ),
        (
            "T122",
            12,
            14,
            "process 'worker' restarts on failure and uses barrier 'start': a restarted "
            "instance waits at it again, so its count goes wrong and the other parties block "
            "or pass too early",
        ),
        (
            "T122",
            12,
            14,
            "process 'worker' restarts on failure and uses lock 'print_lock': an instance "
            "that dies holding it never releases it, so the other users block forever",
        ),
    ],
    "t124_shared_memory.yaml": [
        (
            "T124",
            4,
            3,
            "the shared-memory channels need 1.8 GB ('frames' 1.0 GB), more than the "
            "1.0 GB the local backend has for shared memory: the run would be refused",
        ),
    ],
    "t123_cpus_asked.yaml": [
        (
            "T123",
            11,
            23,
            "the processes ask for 5 CPUs in all (worker[0..3] 4 x 1, producer 1) and the "
            "local backend has 2 CPUs: they will share them, so each instance gets less CPU "
            "time than it asks for",
        ),
    ],
    "t123_oversubscribed.yaml": [
        (
            "T123",
            6,
            15,
            "18 process instances on 2 CPUs are more than 4 per CPU: they compete for CPU "
            "time, so CPU-bound work runs slower than with fewer instances, and each costs a "
            "whole Python interpreter's memory",
        ),
    ],
}


@pytest.fixture
def two_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """T123 and T124 depend on the machine: pretend it has two CPUs and 1 GB of
    shared memory."""
    monkeypatch.setattr(LocalBackend, "cpus", lambda self: 2)
    monkeypatch.setattr(LocalBackend, "shared_memory", lambda self: 1_000_000_000)


# ----- the bad specs ------------------------------------------------------------------------


@pytest.mark.usefixtures("two_cpus")
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_spec_gives_exactly_its_diagnostics(name: str) -> None:
    found = [(d.code, d.line, d.col, d.message) for d in validate(CHECKS / name)]
    assert found == EXPECTED[name]
    for d in validate(CHECKS / name):
        assert d.severity == REGISTRY[d.code].severity
        assert d.path == str(CHECKS / name)


def test_every_bad_spec_is_in_the_table() -> None:
    assert sorted(p.name for p in CHECKS.glob("*.yaml")) == sorted(EXPECTED)


def test_every_graph_code_has_a_bad_spec() -> None:
    graph_codes = {code for code in REGISTRY if code.startswith("T1")}  # T123 included
    triggered = {code for rows in EXPECTED.values() for code, *_ in rows}
    assert graph_codes <= triggered


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_example_specs_are_silent(spec: Path) -> None:
    assert validate(spec) == []


# ----- silencing ----------------------------------------------------------------------------


def test_ignore_and_select_narrow_warnings() -> None:
    spec = CHECKS / "t112_lonely.yaml"
    assert validate(spec, ignore=["T112"]) == []
    assert validate(spec, ignore=["T1"]) == []
    assert validate(spec, select=["T10"]) == []
    assert [d.code for d in validate(spec, select=["T112"])] == ["T112"] * 3


def test_errors_cannot_be_ignored() -> None:
    spec = CHECKS / "t102_read_never_written.yaml"
    assert [d.code for d in validate(spec, ignore=["T102"])] == ["T102"]


def test_process_ignore_key_silences_its_warnings(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    # The same topology as t112_lonely.yaml's `hermit`, without and with the key.
    text = """\
        locks:
          go: event
        processes:
          waiter:
            target: topo.examples.sync:prepare_and_signal
            args: {{value: 1}}
            uses: {{go: go, answer: answer}}
            {ignore}
        channels:
          answer: {{kind: value, type: i}}
    """
    loud = write_spec(tmp_path, text.format(ignore=""), "loud.yaml")
    quiet = write_spec(tmp_path, text.format(ignore="ignore: [T112]"), "quiet.yaml")
    assert [d.code for d in validate(loud)] == ["T112"]
    assert validate(quiet) == []


def test_oversubscription_counts_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = load(CHECKS / "t123_oversubscribed.yaml", seed=0)
    monkeypatch.setattr(LocalBackend, "cpus", lambda self: 4)  # 18 > 4 x 4
    assert [d.code for d in run_checks(plan)] == ["T123"]
    monkeypatch.setattr(LocalBackend, "cpus", lambda self: 5)  # 18 <= 20
    assert run_checks(plan) == []
    monkeypatch.setattr(LocalBackend, "cpus", lambda self: 1)  # never below 16 in all
    assert [d.code for d in run_checks(plan)] == ["T123"]


def _cpus_plan(write_spec: Callable[..., Path], tmp_path: Path, processes: str) -> Any:
    (tmp_path / "noop.py").write_text("def run(**kwargs):\n    pass\n")
    return load(write_spec(tmp_path, "processes:\n" + processes), seed=0)


def test_declared_cpus_count_as_cpus(
    write_spec: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _cpus_plan(
        write_spec,
        tmp_path,
        """\
          trainer: {target: noop:run, resources: {cpus: 2.5}}
          worker: {target: noop:run, replicas: 3, resources: {cpus: 0.5}}
        """,
    )
    monkeypatch.setattr(LocalBackend, "cpus", lambda self: 4)  # 4 asked for, 4 there
    assert run_checks(plan) == []
    monkeypatch.setattr(LocalBackend, "cpus", lambda self: 3)  # 4 asked for: a warning
    [d] = run_checks(plan)
    assert (d.code, d.line) == ("T123", 2)  # at the trainer's cpus
    assert d.message == (
        "the processes ask for 4 CPUs in all (trainer 2.5, worker[0..2] 3 x 0.5) and the local "
        "backend has 3 CPUs: they will share them, so each instance gets less CPU time than "
        "it asks for"
    )


def test_instances_without_cpus_count_a_quarter_beside_declared_ones(
    write_spec: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LocalBackend, "cpus", lambda self: 2)
    handful = """\
          trainer: {target: noop:run, resources: {cpus: 1}}
          helper: {target: noop:run, replicas: 16}
        """
    # 1 CPU asked for, and a handful of helpers never counted: as without the trainer.
    assert run_checks(_cpus_plan(write_spec, tmp_path, handful)) == []
    many = handful.replace("replicas: 16", "replicas: 20")
    [d] = run_checks(_cpus_plan(write_spec, tmp_path, many))
    assert d.message.startswith(
        "the processes ask for 6 CPUs in all (trainer 1, 5 for 20 instances without cpus, "
        "4 to a CPU) and the local backend has 2 CPUs"
    )
    assert d.line == 3  # the helpers' share is the largest: at their replicas
    ignored = many.replace("replicas: 20", "replicas: 20, ignore: [T123]")
    assert run_checks(_cpus_plan(write_spec, tmp_path, ignored)) == []


def test_many_processes_asking_for_cpus_are_summed_up(
    write_spec: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LocalBackend, "cpus", lambda self: 1)
    processes = "".join(
        f"  p{i}: {{target: noop:run, resources: {{cpus: {c}}}}}\n"
        for i, c in enumerate([0.1, 0.2, 0.3, 0.4, 0.5])
    )
    [d] = run_checks(_cpus_plan(write_spec, tmp_path, processes))
    assert d.message.startswith(
        "the processes ask for 1.5 CPUs in all (p4 0.5, p3 0.4, p2 0.3, 2 more processes 0.3) "
    )


def test_usable_cpus_is_positive() -> None:
    assert LocalBackend().cpus() >= 1


# ----- the graph itself ---------------------------------------------------------------------


def test_graph_of_pipeline() -> None:
    plan = load(ROOT / "specs" / "pipeline.yaml", seed=0)
    g = build_graph(plan)
    instances = [n for n in g if n[0] == "instance"]
    assert len(instances) == 1 + 4 + 1
    assert g.has_edge(("instance", "producer"), ("channel", "tasks"))
    assert g.has_edge(("channel", "tasks"), ("instance", "worker[3]"))
    assert g.has_edge(("instance", "worker[0]"), ("channel", "total"))
    assert g.has_edge(("channel", "total"), ("instance", "worker[0]"))  # uses: both ways

    view = process_view(g)
    assert view.nodes[("process", "worker")]["replicas"] == 4
    assert bound_by(view, ("channel", "tasks")) == [
        Bound("producer", "output", "out"),
        Bound("worker", "input", "inbox"),
    ]
    assert bound_by(view, ("channel", "total")) == [Bound("worker", "use", "total")]


def test_after_and_condition_edges() -> None:
    plan = load(CHECKS / "t121_after_starves.yaml", seed=0)
    waits = waits_for(process_view(build_graph(plan)))
    assert set(waits.edges) == {("writer", "reader"), ("middle", "auditor"), ("clerk", "middle")}
    assert nx.ancestors(waits, "auditor") == {"middle", "clerk"}

    plan = load(CHECKS / "t104_unused.yaml", seed=0)
    g = build_graph(plan)
    assert g.has_edge(("lock", "ready"), ("lock", "mutex"))


def test_one_cycle_per_component() -> None:
    g = nx.DiGraph([("a", "b"), ("b", "a"), ("b", "c"), ("c", "a"), ("x", "y"), ("y", "x")])
    g.add_edge("z", "z")  # a self-loop is not a cycle here (T032 reports waiting on itself)
    assert one_cycle_per_component(g) == [["a", "b"], ["x", "y"]]
    assert one_cycle_per_component(nx.DiGraph([("a", "b")])) == []


def test_unknown_bindings_do_not_break_the_graph_checks(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    spec = write_spec(
        tmp_path,
        """\
        processes:
          a:
            target: topo.examples.channels:receive_all
            inputs: {conn: nowhere}
            after: [ghost, a]
        """,
    )
    assert sorted(d.code for d in validate(spec)) == ["T030", "T032", "T032"]


# ----- the documentation --------------------------------------------------------------------


def _codes_in_sources() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "topo").glob("*.py"):
        found |= set(re.findall(r'"(T\d{3})"', path.read_text(encoding="utf-8")))
    return found


def test_every_code_is_documented() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    documented = set(re.findall(r"^#+ .*?\b(T\d{3})\b", docs, flags=re.MULTILINE))
    codes = set(REGISTRY) | _codes_in_sources()
    assert codes - documented == set()
    assert documented - codes == set()


def test_a_name_shared_by_a_channel_and_a_lock_is_only_t033(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    spec = write_spec(
        tmp_path,
        """\
        channels:
          state: {kind: value, type: i}
        locks:
          state: lock
        processes:
          a:
            target: topo.examples.shared:scale
            args: {factor: 2}
            uses: {weights: state}
        """,
    )
    assert [d.code for d in validate(spec)] == ["T033"]
