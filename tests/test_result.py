"""topo.result: JSON conversion of results and state, RunResult's JSON and exit codes."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from topo.result import EXIT_CODES, EXIT_SIGTERM, InstanceResult, RunResult, to_jsonable


@dataclass
class Point:
    x: int
    y: tuple[int, int] = (1, 2)
    tags: set[str] = field(default_factory=lambda: {"b", "a"})


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (3, 3),
        ("text", "text"),
        (1.5, 1.5),
        ((1, 2), [1, 2]),
        ({3, 1, 2}, [1, 2, 3]),
        (frozenset({"b", "a"}), ["a", "b"]),
        (b"bytes", "bytes"),
        (bytearray(b"ab"), "ab"),
        (b"\xff", "\ufffd"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
        ({1: "a", (1, 2): "b"}, {"1": "a", "(1, 2)": "b"}),
        (Point(1), {"x": 1, "y": [1, 2], "tags": ["a", "b"]}),
        (Opaque(), "<Opaque thing>"),
        ({"a": [(1, {2}), {"b": Opaque()}]}, {"a": [[1, [2]], {"b": "<Opaque thing>"}]}),
    ],
)
def test_to_jsonable(value: Any, expected: Any) -> None:
    converted = to_jsonable(value)
    assert converted == expected
    json.dumps(converted, allow_nan=False)  # strict JSON


def test_to_jsonable_class_is_its_repr() -> None:
    assert to_jsonable(Point) == repr(Point)


def test_to_jsonable_numpy() -> None:
    import numpy as np  # in the `test` extra

    assert to_jsonable(np.arange(3)) == [0, 1, 2]
    assert to_jsonable(np.float64(2.5)) == 2.5
    assert to_jsonable(np.array([math.nan])) == ["nan"]


def test_to_jsonable_of_a_self_containing_list_ends() -> None:
    loop: list[Any] = []
    loop.append(loop)
    converted = to_jsonable(loop)
    json.dumps(converted)  # bounded depth, then a repr


def test_exit_codes() -> None:
    assert EXIT_CODES == {
        "ok": 0,
        "failed": 1,
        "invalid": 2,
        "deadlock": 3,
        "timeout": 4,
        "interrupted": 130,
        "killed": 137,  # written by the guardian only, into the record of a killed topo
    }
    assert EXIT_SIGTERM == 143
    for status, code in EXIT_CODES.items():
        result = RunResult(name="r", status=status, seed=1, params={})  # type: ignore[arg-type]
        assert result.exit_code == code
        assert result.ok is (status == "ok")
    stopped = RunResult(name="r", status="interrupted", seed=1, params={}, exit_code=143)
    assert stopped.exit_code == 143


def test_run_result_to_json_shape() -> None:
    result = RunResult(
        name="pipeline",
        status="failed",
        seed=1234,
        params={"items": (1, 2), "workers": 4},
        run_dir="runs/pipeline/x",
        duration_s=1.23456789,
        processes={
            "producer": InstanceResult(
                exit_code=0, result=None, duration_s=0.4, state="exited", pid=10
            ),
            "worker[0]": InstanceResult(
                exit_code=1, restarts=2, duration_s=0.1, state="failed", error="Traceback..."
            ),
        },
        state={"total": 3.5},
        message="worker[0] exited with code 1",
    )
    doc = result.to_json()
    assert doc == {
        "name": "pipeline",
        "status": "failed",
        "exit_code": 1,
        "seed": 1234,
        "params": {"items": [1, 2], "workers": 4},
        "run_dir": "runs/pipeline/x",
        "duration_s": 1.234568,
        "processes": {
            "producer": {
                "exit_code": 0,
                "result": None,
                "restarts": 0,
                "duration_s": 0.4,
                "state": "exited",
                "pid": 10,
            },
            "worker[0]": {
                "exit_code": 1,
                "result": None,
                "restarts": 2,
                "duration_s": 0.1,
                "state": "failed",
                "pid": None,
                "error": "Traceback...",
            },
        },
        "state": {"total": 3.5},
        "undelivered": {},
        "backend": "local",
        "channels": {},
        "bottleneck": None,
        "message": "worker[0] exited with code 1",
    }
    assert json.loads(json.dumps(doc)) == doc


def test_ok_result_has_no_message() -> None:
    doc = RunResult(name="r", status="ok", seed=None, params={}).to_json()
    assert "message" not in doc
    assert doc["exit_code"] == 0
    assert doc["processes"] == {} and doc["state"] == {}
    assert doc["run_dir"] is None and doc["seed"] is None


def test_instance_result_defaults() -> None:
    assert InstanceResult().to_json() == {
        "exit_code": None,
        "result": None,
        "restarts": 0,
        "duration_s": 0.0,
        "state": "not started",
        "pid": None,
    }
