"""topo.record: run directories and atomic writes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from topo import record


def test_runs_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(record.RUNS_DIR_ENV, raising=False)
    assert record.runs_root() == Path("runs")
    monkeypatch.setenv(record.RUNS_DIR_ENV, str(tmp_path / "env"))
    assert record.runs_root() == tmp_path / "env"
    assert record.runs_root(tmp_path / "given") == tmp_path / "given"  # the flag wins


def test_new_run_dir_layout(tmp_path: Path) -> None:
    path = record.new_run_dir("pipeline", tmp_path / "runs")
    assert path.is_dir()
    assert path.parent == tmp_path / "runs" / "pipeline"
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", path.name), path.name


def test_new_run_dirs_are_distinct(tmp_path: Path) -> None:
    paths = {record.new_run_dir("r", tmp_path) for _ in range(20)}
    assert len(paths) == 20
    assert all(p.is_dir() and p.parent == tmp_path / "r" for p in paths)


def test_new_run_dir_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(record.RUNS_DIR_ENV, str(tmp_path / "from_env"))
    assert record.new_run_dir("r").parent == tmp_path / "from_env" / "r"


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


def test_write_start_and_summary(tmp_path: Path) -> None:
    run_dir = record.new_run_dir("r", tmp_path)
    record.write_start(run_dir, "processes: {}\n# as written\n", {"name": "r", "seed": 1})
    record.write_summary(run_dir, {"status": "ok", "exit_code": 0})
    assert (run_dir / "spec.yaml").read_text() == "processes: {}\n# as written\n"
    assert yaml.safe_load((run_dir / "resolved.yaml").read_text()) == {"name": "r", "seed": 1}
    assert (run_dir / "resolved.yaml").read_text().startswith("name: r\n")  # order kept
    assert json.loads((run_dir / "run.json").read_text()) == {"status": "ok", "exit_code": 0}
    assert sorted(p.name for p in run_dir.iterdir()) == ["resolved.yaml", "run.json", "spec.yaml"]


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


def test_new_run_dir_says_which_folder_it_cannot_create(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(NotADirectoryError) as info:  # still the OSError it was
        record.new_run_dir("spec", tmp_path / "a-file")
    assert re.fullmatch(
        rf"cannot create run folder {re.escape(str(tmp_path))}/a-file/spec/[-0-9a-f]+: "
        "Not a directory",
        info.value.strerror,
    )


def test_recorder_keeps_the_first_write_error_and_never_raises(tmp_path: Path) -> None:
    run_dir = record.new_run_dir("spec", tmp_path)
    recorder = record.Recorder(run_dir)
    recorder.log("a", "first line")
    recorder.event("start", instance="a")
    (run_dir / record.LOGS / "a.log").unlink()
    os.rmdir(run_dir / record.LOGS)  # a new instance's log cannot be opened now
    recorder.log("b", "lost")
    assert isinstance(recorder.error, FileNotFoundError)
    recorder.log("a", "dropped too")  # nothing more is written after the first error
    recorder.event("exit", instance="a")
    recorder.close()
    assert isinstance(recorder.error, FileNotFoundError)
    assert len((run_dir / record.EVENTS).read_text().splitlines()) == 1
