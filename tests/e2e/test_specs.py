"""Run every spec in specs/ through the real CLI and check what it computed.

Each spec has one ``expect_<name>`` function below that checks the run's results and
final state. Every spec runs once under the default start method (spawn); the
primitive specs also run under fork and forkserver.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import TopoRun

SPECS_DIR = Path(__file__).resolve().parents[2] / "specs"
SPECS = sorted(SPECS_DIR.glob("*.yaml"))
PRIMITIVE_SPECS = [spec for spec in SPECS if spec.stem != "pipeline"]

Doc = dict[str, Any]
EXPECTATIONS: dict[str, Callable[[Doc], None]] = {}


def expect(check: Callable[[Doc], None]) -> Callable[[Doc], None]:
    """Register ``expect_<spec stem>`` as the check of that spec's run document."""
    EXPECTATIONS[check.__name__.removeprefix("expect_")] = check
    return check


def results(doc: Doc) -> dict[str, Any]:
    return {name: record["result"] for name, record in doc["processes"].items()}


def sum_of_squares_below(n: int) -> int:
    return sum(i * i for i in range(n))


# ----- expectations, one per spec -------------------------------------------------------


def check_pipeline(doc: Doc, *, items: int, workers: int) -> None:
    workers_ = [f"worker[{i}]" for i in range(workers)]
    assert set(doc["processes"]) == {"producer", "collector", *workers_}
    assert doc["params"] == {"items": items, "workers": workers}
    got = results(doc)
    assert got["producer"] == items
    assert got["collector"] == {"count": items, "sum": sum_of_squares_below(items)}
    assert sum(got[w] for w in workers_) == items
    assert doc["state"]["total"] == sum_of_squares_below(items)


@expect
def expect_pipeline(doc: Doc) -> None:
    assert doc["name"] == "pipeline"
    assert doc["seed"] == 1234
    check_pipeline(doc, items=1000, workers=4)
    assert doc["state"]["total"] == 332_833_500


@expect
def expect_queue_fan_in(doc: Doc) -> None:
    got = results(doc)
    assert got["letters"] == 4 and got["digits"] == 3
    merged = got["sink"]
    assert sorted(merged) == ["1", "2", "3", "a", "b", "c", "d"]
    # interleaved any which way, but each sender's items arrive in the order it sent them
    assert [x for x in merged if x.isalpha()] == ["a", "b", "c", "d"]
    assert [x for x in merged if x.isdigit()] == ["1", "2", "3"]


@expect
def expect_simple_queue(doc: Doc) -> None:
    assert results(doc) == {"speaker": 5, "listener": "simple queues keep it simple"}


@expect
def expect_joinable_queue(doc: Doc) -> None:
    got = results(doc)
    assert set(got) == {"boss", "worker[0]", "worker[1]"}
    assert got["boss"] == 20
    assert got["worker[0]"] + got["worker[1]"] == 20


@expect
def expect_pipe_duplex(doc: Doc) -> None:
    assert results(doc) == {"alice": "hello back from bob", "bob": "hello from alice"}


@expect
def expect_pipe_oneway(doc: Doc) -> None:
    assert results(doc) == {"sender": 5, "receiver": [0, 1, 2, 3, 4]}


@expect
def expect_shared_value(doc: Doc) -> None:
    got = results(doc)
    assert [got[f"adder[{i}]"] for i in range(4)] == [100] * 4
    assert got["averager"] == 0.25
    assert doc["state"] == {"total": 100.0, "hits": 400, "mean": 0.25}


@expect
def expect_shared_array(doc: Doc) -> None:
    got = results(doc)
    assert got["filler[0]"] == [0, 2, 4, 6]
    assert got["filler[1]"] == [1, 3, 5, 7]
    assert got["scaler"] == [1.0, 3.0, 5.0]
    assert doc["state"] == {
        "squares": [0, 1, 4, 9, 16, 25, 36, 49],
        "weights": [1.0, 3.0, 5.0],
    }


@expect
def expect_manager_state(doc: Doc) -> None:
    expected_state = {
        "scores": {"alice": 1, "bob": 2},
        "log": ["writer was here"],
        "info": {"status": "written", "writer": "writer"},
        "hits": 1,
        "grid": [0, 10, 20],
    }
    assert doc["state"] == expected_state
    assert results(doc) == {
        "writer": "recorded",
        "reader": {
            "scores": {"alice": 1, "bob": 2},
            "log": ["writer was here"],
            "status": "written",
            "writer": "writer",
            "hits": 1,
            "grid": [0, 10, 20],
        },
    }


@expect
def expect_lock(doc: Doc) -> None:
    speakers = [f"speaker[{i}]" for i in range(5)]
    assert results(doc) == dict.fromkeys(speakers, 3)
    transcript = doc["state"]["transcript"]
    assert len(transcript) == 15
    # the lock keeps each speaker's three lines together, in order
    blocks = [transcript[i : i + 3] for i in range(0, 15, 3)]
    said = []
    for block in blocks:
        speaker = block[0].split()[0]
        assert block == [f"{speaker} line {n}/3" for n in (1, 2, 3)], transcript
        said.append(speaker)
    assert sorted(said) == speakers


@expect
def expect_rlock(doc: Doc) -> None:
    assert results(doc) == {f"account[{i}]": 50 for i in range(3)}
    assert doc["state"] == {"balance": 150}


@expect
def expect_condition(doc: Doc) -> None:
    assert results(doc) == {"waiter[0]": 1, "waiter[1]": 1, "notifier": 1}
    assert doc["state"] == {"stage": 1}


@expect
def expect_semaphore(doc: Doc) -> None:
    crowds = list(results(doc).values())
    assert len(crowds) == 5
    assert set(crowds) <= {1, 2}
    assert doc["state"] == {"inside": 0, "peak": 2}  # two at a time, never three


@expect
def expect_bounded_semaphore(doc: Doc) -> None:
    got = results(doc)
    assert [got[f"user[{i}]"] for i in range(3)] == [3, 3, 3]
    assert got["checker"].startswith("refused: ")


@expect
def expect_event(doc: Doc) -> None:
    assert results(doc) == {"starter": 42, "waiter[0]": 42, "waiter[1]": 42, "waiter[2]": 42}
    assert doc["state"] == {"answer": 42}


@expect
def expect_barrier(doc: Doc) -> None:
    got = results(doc)
    assert set(got) == {"runner[0]", "runner[1]", "runner[2]", "referee"}
    assert {r["parties"] for r in got.values()} == {4}  # every instance that uses it
    assert sorted(r["index"] for r in got.values()) == [0, 1, 2, 3]  # all passed in one round


@expect
def expect_manager_object(doc: Doc) -> None:
    got = results(doc)
    clients = [f"client[{i}]" for i in range(6)]
    for client in clients:
        assert len(got[client]) == 3
        assert set(got[client]) <= {0, 1, 2, 3}
    stats = got["auditor"]
    assert stats["size"] == 4
    assert stats["acquired"] == 18
    assert stats["in_use"] == 0
    assert 1 <= stats["peak"] <= 4


@expect
def expect_manager_queue_lock(doc: Doc) -> None:
    assert results(doc) == {"feeder": 10, "summer": {"count": 10, "sum": sum_of_squares_below(10)}}


# ----- tests ----------------------------------------------------------------------------


@expect
def expect_shm_frames(doc: Doc) -> None:
    # 50 uniform random frames summed: every pixel's mean is close to 0.5.
    assert results(doc)["camera"] == 50
    assert results(doc)["integrator"]["frames"] == 50
    assert abs(results(doc)["integrator"]["mean"] - 0.5) < 0.01
    assert results(doc)["inspector"] == [512, 256]
    image = doc["state"]["image"]
    assert len(image) == 512 and len(image[0]) == 256
    assert 15 < image[0][0] < 35  # a sum of 50 uniform draws


def spec_id(spec: Path) -> str:
    return spec.stem


def run_spec(run_topo: Callable[..., TopoRun], runs_dir: Path, spec: Path, *sets: str) -> Doc:
    overrides = [arg for setting in sets for arg in ("--set", setting)]
    run = run_topo("run", "--json", "--runs-dir", str(runs_dir), str(spec), *overrides)
    return run.ok()


def test_every_spec_has_an_expectation() -> None:
    assert {spec.stem for spec in SPECS} == set(EXPECTATIONS)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_spec_is_valid(run_topo: Callable[..., TopoRun], spec: Path) -> None:
    run = run_topo("validate", str(spec))
    assert run.returncode == 0, str(run)
    assert "warning[" not in run.stdout + run.stderr, str(run)  # the examples are clean


@pytest.mark.timeout(60)
@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_spec_runs(run_topo: Callable[..., TopoRun], tmp_path: Path, spec: Path) -> None:
    doc = run_spec(run_topo, tmp_path, spec)
    assert doc["name"] == spec.stem
    EXPECTATIONS[spec.stem](doc)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
@pytest.mark.parametrize("spec", PRIMITIVE_SPECS, ids=spec_id)
def test_primitive_spec_runs_under(
    run_topo: Callable[..., TopoRun], tmp_path: Path, spec: Path, start_method: str
) -> None:
    doc = run_spec(run_topo, tmp_path, spec, f"start_method={start_method}")
    EXPECTATIONS[spec.stem](doc)


@pytest.mark.timeout(60)
def test_pipeline_with_overridden_params(run_topo: Callable[..., TopoRun], tmp_path: Path) -> None:
    doc = run_spec(
        run_topo, tmp_path, SPECS_DIR / "pipeline.yaml", "params.workers=2", "params.items=100"
    )
    check_pipeline(doc, items=100, workers=2)
    assert doc["state"]["total"] == 328_350
