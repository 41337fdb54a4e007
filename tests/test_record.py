"""topo.record: run and sweep folders (create, finish, load), atomic writes, the manifest."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import topo.api
from topo import record
from topo.record import RunFolder, SweepFolder
from topo.resolve import Plan
from topo.result import InstanceResult, RunResult, State

SPEC = """\
name: tiny
seed: 5
params: {n: 2}
processes:
  w:
    target: os.path:join
    args: {a: "${params.n}"}
    replicas: 2
"""


@pytest.fixture
def plan(tmp_path: Path, write_spec: Callable[..., Path]) -> Plan:
    return topo.api.load(write_spec(tmp_path, SPEC, "tiny.yaml"), ["params.n=3"])


def result_of(plan: Plan, folder: RunFolder) -> RunResult:
    return RunResult(
        plan.name,
        "ok",
        plan.seed,
        dict(plan.params),
        run_dir=str(folder.path),
        duration_s=0.25,
        processes={"w[0]": InstanceResult(0, "3", state=State.EXITED)},
        state={"total": 3},
    )


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_runs_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(record.RUNS_DIR_ENV, raising=False)
    assert record.runs_root() == Path("runs")
    monkeypatch.setenv(record.RUNS_DIR_ENV, str(tmp_path / "env"))
    assert record.runs_root() == tmp_path / "env"
    assert record.runs_root(tmp_path / "given") == tmp_path / "given"  # the flag wins


# ----- RunFolder: create -> (log, event) -> finish -> load --------------------------------


def test_create_makes_the_folder_with_the_specs_and_a_running_summary(
    plan: Plan, tmp_path: Path
) -> None:
    folder = RunFolder.create(plan, tmp_path / "runs", extra={"sweep": {"index": 1}})
    assert folder.path.parent == tmp_path / "runs" / "tiny"
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", folder.path.name), folder.path.name
    assert files(folder.path) == ["events.jsonl", "logs", "resolved.yaml", "run.json", "spec.yaml"]
    assert folder.spec_file.read_text(encoding="utf-8") == SPEC  # as written
    resolved = yaml.safe_load(folder.resolved_file.read_text(encoding="utf-8"))
    assert resolved["params"] == {"n": 3} and resolved["seed"] == 5
    running = json.loads(folder.summary_file.read_text(encoding="utf-8"))
    assert {k: running[k] for k in ("name", "status", "exit_code", "seed", "params")} == {
        "name": "tiny",
        "status": "running",
        "exit_code": None,
        "seed": 5,
        "params": {"n": 3},
    }
    assert running["run_dir"] == str(folder.path)
    manifest = running["manifest"]
    assert manifest["sweep"] == {"index": 1}  # known before the run: there from the start
    assert manifest["overrides"] == ["params.n=3"] and manifest["seed"] == 5
    assert set(manifest["seeds"]) == {"w[0]", "w[1]"}
    assert "distributions" not in manifest  # scanned when the run ends
    folder.finish(result_of(plan, folder))


def test_create_under_the_runs_folder_of_the_environment(
    plan: Plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(record.RUNS_DIR_ENV, str(tmp_path / "from_env"))
    folder = RunFolder.create(plan)
    assert folder.path.parent == tmp_path / "from_env" / "tiny"
    folder.finish(result_of(plan, folder))


def test_created_folders_are_distinct(
    plan: Plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(record, "git_state", lambda folder: None)
    folders = [RunFolder.create(plan, tmp_path) for _ in range(10)]
    assert len({f.path for f in folders}) == 10
    assert all(f.path.parent == tmp_path / "tiny" for f in folders)
    for f in folders:
        f.finish(result_of(plan, f))


def test_create_finish_load_round_trip(plan: Plan, tmp_path: Path) -> None:
    folder = RunFolder.create(plan, tmp_path, extra={"rerun_of": {"id": "x"}})
    folder.log("w[0]", "hello")
    folder.log("w[0]", "again")
    folder.log("w[1]", "other")
    folder.event("start", instance="w[0]")
    folder.event("exit", instance="w[0]", exit_code=0)
    result = result_of(plan, folder)
    written = folder.finish(result, extra={"note": "at the end"})

    rec = RunFolder.load(folder.path)
    assert rec.path == folder.path and rec.id == folder.path.name
    assert rec.summary == written
    assert {k: v for k, v in rec.summary.items() if k != "manifest"} == result.to_json()
    assert rec.status == "ok" and rec.name == "tiny" and rec.params == {"n": 3}
    assert rec.duration_s == 0.25 and rec.started_at and rec.sweep is None
    assert rec.manifest["rerun_of"] == {"id": "x"} and rec.manifest["note"] == "at the end"
    assert "pydantic" in {name.lower() for name in rec.manifest["distributions"]}
    assert rec.folder.log_file("w[0]").read_text(encoding="utf-8") == "hello\nagain\n"
    assert rec.folder.log_file("w[1]").read_text(encoding="utf-8") == "other\n"
    events = [json.loads(line) for line in rec.folder.events_file.read_text().splitlines()]
    assert [(e["event"], e.get("exit_code")) for e in events] == [("start", None), ("exit", 0)]
    assert all("time" in e for e in events)
    assert files(folder.path) == [
        "events.jsonl", "logs", "logs/w[0].log", "logs/w[1].log", "resolved.yaml", "run.json",
        "spec.yaml",
    ]  # fmt: skip
    assert rec.spec_defaults() == {"n": 2}  # spec.yaml as written, without the override


def test_finish_writes_once(plan: Plan, tmp_path: Path) -> None:
    folder = RunFolder.create(plan, tmp_path)
    folder.finish(result_of(plan, folder))
    with pytest.raises(RuntimeError, match="finished"):
        folder.finish(result_of(plan, folder))
    with pytest.raises(RuntimeError):
        folder.event("late")  # the sinks are closed
    with pytest.raises(RuntimeError):
        folder.log("w[0]", "late")
    assert RunFolder.load(folder.path).status == "ok"


@pytest.mark.parametrize(
    ("error", "status", "exit_code", "message"),
    [
        (RuntimeError("launcher broke"), "failed", 1, "topo error: RuntimeError: launcher broke"),
        (KeyboardInterrupt(), "interrupted", 130, "interrupted"),
    ],
)
def test_a_run_ended_by_an_exception_is_recorded_as_such(
    tmp_path: Path,
    write_spec: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    status: str,
    exit_code: int,
    message: str,
) -> None:
    def broken(plan: Plan, backend: Any, options: Any, say: Any) -> RunResult:
        assert options.events is not None
        options.events("start", instance="w[0]")
        raise error

    monkeypatch.setattr(topo.api, "_run", broken)
    spec = write_spec(tmp_path, SPEC, "tiny.yaml")
    with pytest.raises(type(error)):
        topo.api.run(spec, runs_dir=tmp_path / "runs", quiet=True, output=lambda n, line: None)
    [run_dir] = (tmp_path / "runs" / "tiny").iterdir()
    rec = RunFolder.load(run_dir)
    assert rec.status == status and rec.summary["exit_code"] == exit_code  # not "running"
    assert rec.summary["message"] == message
    assert rec.summary["run_dir"] == str(run_dir) and rec.summary["processes"] == {}
    assert isinstance(rec.duration_s, float) and "distributions" in rec.manifest
    events = [json.loads(line) for line in rec.folder.events_file.read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", status]
    assert events[-1]["message"] == message
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]


def test_load_refuses_what_is_not_a_record(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        RunFolder.load(tmp_path)
    (tmp_path / "run.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="JSON object"):
        RunFolder.load(tmp_path)
    (tmp_path / "run.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError):
        RunFolder.load(tmp_path)
    assert RunFolder.is_run(tmp_path) and not RunFolder.is_run(tmp_path / "nothing")


def test_run_ids() -> None:
    assert RunFolder.hex_id("20240501-120000-3fa2c1") == "3fa2c1"
    assert RunFolder.stamp("20240501-120000-3fa2c1") == "20240501-120000"
    assert RunFolder.hex_id("hand-made") == "hand-made"


def test_sweep_folder_and_the_records_under_a_runs_folder(plan: Plan, tmp_path: Path) -> None:
    sweep = SweepFolder.create("tiny", tmp_path)
    assert sweep.path.parent == tmp_path / "tiny"
    assert re.fullmatch(r"sweep-\d{8}-\d{6}-[0-9a-f]{6}", sweep.path.name), sweep.path.name
    sweep.save("run,status\n1,ok\n", {"runs": []})
    assert sweep.summary_file.read_text(encoding="utf-8") == "run,status\n1,ok\n"
    assert json.loads(sweep.json_file.read_text(encoding="utf-8")) == {"runs": []}

    alone = RunFolder.create(plan, tmp_path)
    in_sweep = RunFolder.create(plan, sweep.path)  # a sweep folder is its runs' runs folder
    for f in (alone, in_sweep):
        f.finish(result_of(plan, f))
    (tmp_path / "tiny" / "20240101-000000-bad000").mkdir()
    (tmp_path / "tiny" / "20240101-000000-bad000" / "run.json").write_text("{", encoding="utf-8")
    found = {r.path: r for r in record.records_under(tmp_path)}
    assert set(found) == {alone.path, in_sweep.path}  # the unreadable one is left out
    assert found[in_sweep.path].sweep == sweep.path.name and found[alone.path].sweep is None


def test_the_layout_is_named_only_in_topo_record() -> None:
    names = [
        RunFolder.SUMMARY, RunFolder.SPEC, RunFolder.RESOLVED, RunFolder.EVENTS,
        SweepFolder.PREFIX, SweepFolder.SUMMARY, SweepFolder.JSON,
    ]  # fmt: skip
    package = Path(record.__file__).parent
    for path in package.rglob("*.py"):
        if path.name == "record.py":
            continue
        text = path.read_text(encoding="utf-8")
        for name in names:
            for quote in "\"'":
                assert f"{quote}{name}{quote}" not in text, f"{path} names {name!r}"


# ----- atomic writes ------------------------------------------------------------------------


def test_write_atomic(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    record.write_atomic(target, "first")
    record.write_atomic(target, "second\n")
    assert target.read_text(encoding="utf-8") == "second\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary files left


def test_write_atomic_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    record.write_atomic(target, "old")
    with pytest.raises(UnicodeEncodeError):
        record.write_atomic(target, "bad \udcff surrogate")
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_write_atomic_goes_through_a_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "run.json"
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        renames.append((str(src), str(dst)))
        assert not Path(dst).exists()  # the target appears only whole
        real_replace(src, dst)

    monkeypatch.setattr(record.os, "replace", spy)
    record.write_atomic(target, "text")
    [(src, dst)] = renames
    assert dst == str(target)
    assert Path(src).parent == tmp_path and Path(src).name.startswith(".run.json.")


def test_distributions_match_the_metadata_parser() -> None:
    import importlib.metadata

    expected = {}
    for d in importlib.metadata.distributions():
        name = d.metadata["Name"]
        if name:
            expected[name] = d.version
    assert record.distributions() == dict(sorted(expected.items(), key=lambda kv: kv[0].lower()))
    assert "pydantic" in {name.lower() for name in record.distributions()}


class _Dist:
    """A distribution whose metadata is only what the test gives."""

    def __init__(self, text: str) -> None:
        self.text = text

    def read_text(self, name: str) -> str | None:
        return self.text if name == "METADATA" else None

    @property
    def metadata(self) -> object:
        import email

        return email.message_from_string(self.text)  # as importlib.metadata's: None if absent


def test_name_and_version_from_the_headers_or_the_parser() -> None:
    plain = "Metadata-Version: 2.1\nName: thing\nVersion: 1.2\n\nName: not a header\n"
    assert record._name_and_version(_Dist(plain)) == ("thing", "1.2")
    folded = "Metadata-Version: 2.1\nSummary: a\n  folded line\nName: late\nVersion: 3\n"
    assert record._name_and_version(_Dist(folded)) == ("late", "3")
    no_version = "Metadata-Version: 2.1\nName: partial\n\nVersion: 9 (in the body)\n"
    assert record._name_and_version(_Dist(no_version)) == ("partial", None)


def test_create_says_which_folder_it_cannot_create(plan: Plan, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(NotADirectoryError) as info:  # still the OSError it was
        RunFolder.create(plan, tmp_path / "a-file")
    assert re.fullmatch(
        rf"cannot create run folder {re.escape(str(tmp_path))}/a-file/{plan.name}/[-0-9a-f]+: "
        "Not a directory",
        info.value.strerror,
    )


def test_sinks_keep_the_first_write_error_and_never_raise(plan: Plan, tmp_path: Path) -> None:
    folder = RunFolder.create(plan, tmp_path)
    folder.log("a", "first line")
    folder.event("start", instance="a")
    folder.log_file("a").unlink()
    os.rmdir(folder.logs_dir)  # a new instance's log cannot be opened now
    folder.log("b", "lost")
    assert isinstance(folder.error, FileNotFoundError)
    folder.log("a", "dropped too")  # nothing more is written after the first error
    folder.event("exit", instance="a")
    result = RunResult(plan.name, "ok", plan.seed, {}, run_dir=str(folder.path))
    summary = folder.finish(result)
    assert len(folder.events_file.read_text().splitlines()) == 1
    assert (result.status, result.exit_code) == ("failed", 1)  # a lost record fails the run
    assert summary["status"] == "failed"
    assert summary["message"] == (
        f"the logs and events in {folder.path} could not be written: No such file or directory"
    )
