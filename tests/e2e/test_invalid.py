"""The real CLI on specs that must not start anything, and on a run whose target raises.

An invalid spec ends with exit code 2, a located diagnostic on stderr, a JSON document
with status "invalid" on stdout, no traceback, and no process started (each target
would create a marker file when called). A target that raises fails the run (exit 1):
its traceback is shown under its instance's name, the other instances are stopped, and
what finished before is kept.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import TopoRun

TARGETS = """\
import time
from pathlib import Path


def touch(marker, **kwargs):
    Path(marker).write_text("started")


def takes_nothing(marker):
    Path(marker).write_text("started")


def quick():
    return {"pair": (1, 2)}


def work(i, marker):
    if i == 0:
        return f"done {i}"
    time.sleep(0.5)
    raise ValueError(f"kaboom in {i}")


def sleep(marker):
    Path(marker).write_text("started")
    time.sleep(30)
    return "never"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "e2e_targets.py").write_text(TARGETS, encoding="utf-8")
    return tmp_path


def write(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).replace("MARKER", str(folder / "marker")))
    return path


def assert_invalid(run: TopoRun, spec: Path, code: str, line: int, col: int) -> None:
    assert run.returncode == 2, str(run)
    assert run.doc is not None, f"stdout is not one JSON document\n{run}"
    assert run.doc["status"] == "invalid"
    assert run.doc["exit_code"] == 2
    assert run.doc["name"] == spec.stem
    assert [(d["code"], d["line"], d["col"]) for d in run.doc["diagnostics"]] == [
        (code, line, col)
    ], str(run)
    first = run.stderr.splitlines()[0]
    assert re.fullmatch(rf"{re.escape(str(spec))}:{line}:{col}: error\[{code}\]: .+", first), str(
        run
    )
    assert "Traceback" not in run.stderr, str(run)
    assert not (spec.parent / "marker").exists(), "a target ran for an invalid spec"
    assert not (spec.parent / "runs").exists(), "an invalid spec was recorded"


def run_invalid(run_topo: Callable[..., TopoRun], spec: Path) -> TopoRun:
    return run_topo("run", "--json", "--runs-dir", str(spec.parent / "runs"), str(spec))


@pytest.mark.timeout(60)
def test_unknown_channel_name(run_topo: Callable[..., TopoRun], folder: Path) -> None:
    spec = write(
        folder,
        """\
        channels:
          tasks: queue
        processes:
          producer:
            target: e2e_targets:touch
            args: {marker: MARKER}
            outputs: {out: taks}
        """,
    )
    run = run_invalid(run_topo, spec)
    assert_invalid(run, spec, "T030", 7, 20)
    assert "(did you mean 'tasks'?)" in run.stderr


@pytest.mark.timeout(60)
def test_missing_target_module(run_topo: Callable[..., TopoRun], folder: Path) -> None:
    spec = write(
        folder,
        """\
        processes:
          first:
            target: e2e_targets:touch
            args: {marker: MARKER}
          second:
            target: e2e_no_such_module:main
        """,
    )
    run = run_invalid(run_topo, spec)
    assert_invalid(run, spec, "T040", 6, 13)
    assert "target of 'second': module 'e2e_no_such_module' is not found" in run.stderr


@pytest.mark.timeout(60)
def test_yaml_syntax_error(run_topo: Callable[..., TopoRun], folder: Path) -> None:
    spec = write(
        folder,
        """\
        processes:
          p:
            target: e2e_targets:touch
            args: {marker: MARKER
        """,
    )
    run = run_invalid(run_topo, spec)
    assert_invalid(run, spec, "T001", 5, 1)
    assert "invalid YAML" in run.stderr


@pytest.mark.timeout(60)
def test_signature_does_not_fit(run_topo: Callable[..., TopoRun], folder: Path) -> None:
    spec = write(
        folder,
        """\
        channels:
          tasks: queue
        processes:
          ok:
            target: e2e_targets:touch
            args: {marker: MARKER}
            inputs: {inbox: tasks}
          p:
            target: e2e_targets:takes_nothing
            args: {marker: MARKER, extra: 1}
            outputs: {out: tasks}
        """,
    )
    run = run_invalid(run_topo, spec)
    assert_invalid(run, spec, "T041", 9, 13)
    assert (
        "e2e_targets:takes_nothing takes no parameter 'extra', 'out': calling it for 'p' "
        "would fail" in run.stderr
    )


@pytest.mark.timeout(60)
def test_target_that_raises_fails_the_run(run_topo: Callable[..., TopoRun], folder: Path) -> None:
    spec = write(
        folder,
        """\
        processes:
          quick:
            target: e2e_targets:quick
          worker:
            target: e2e_targets:work
            replicas: 2
            args: {i: "${replica}", marker: MARKER}
            after: [quick]
          sleeper:
            target: e2e_targets:sleep
            args: {marker: MARKER}
        """,
        name="fails.yaml",
    )
    runs = folder / "runs"
    run = run_topo("run", "--json", "--runs-dir", str(runs), str(spec))
    assert run.returncode == 1, str(run)
    doc = run.doc
    assert doc is not None, str(run)
    assert doc["status"] == "failed"
    assert doc["exit_code"] == 1
    assert doc["message"] == "worker[1] exited with code 1"
    processes = doc["processes"]
    assert set(processes) == {"quick", "worker[0]", "worker[1]", "sleeper"}
    # what finished before the failure is kept
    assert processes["quick"]["state"] == "exited"
    assert processes["quick"]["result"] == {"pair": [1, 2]}
    assert processes["worker[0]"]["result"] == "done 0"
    assert processes["worker[0]"]["exit_code"] == 0
    # the failing instance, with its traceback
    failed = processes["worker[1]"]
    assert failed["state"] == "failed"
    assert failed["exit_code"] == 1
    assert failed["error"].startswith("Traceback (most recent call last):")
    assert failed["error"].rstrip().endswith("ValueError: kaboom in 1")
    # the others are stopped by topo
    assert processes["sleeper"]["state"] == "stopped"
    assert processes["sleeper"]["exit_code"] != 0
    assert (folder / "marker").read_text() == "started"
    # the traceback is on stderr, each line under the instance's name
    lines = run.stderr.splitlines()
    assert "worker[1] | Traceback (most recent call last):" in lines, run.stderr
    assert "worker[1] | ValueError: kaboom in 1" in lines, run.stderr
    assert "Traceback" not in run.stderr.replace("worker[1] | Traceback", ""), run.stderr
    # and the record holds the same summary
    [run_dir] = (runs / "fails").iterdir()
    assert doc["run_dir"] == str(run_dir)
    recorded = (run_dir / "run.json").read_text()
    assert '"status": "failed"' in recorded
