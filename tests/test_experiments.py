"""topo.experiments: sweep expansion, run references, changed params, compare, code changes,
and run_sweep driven by a fake run function (no processes)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from topo import experiments as ex
from topo import record
from topo.result import InstanceResult, RunResult

# ----- sweep expansion --------------------------------------------------------------------


def test_parse_axis_reads_yaml_scalars() -> None:
    axis = ex.parse_axis("params.workers=1, 2,4")
    assert axis == ex.Axis("params.workers", (1, 2, 4))
    assert ex.parse_axis("params.mode=fast,slow,true,1.5,null").values == (
        "fast", "slow", True, 1.5, None,
    )  # fmt: skip
    assert ex.parse_axis('params.label=["a,b", c]').values == ("a,b", "c")
    assert ex.parse_axis("timeout=5").values == (5,)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("params.workers", "is not of the form dotted.key=value1,value2"),
        ("=1,2", "is not of the form"),
        ("params.workers=", "is not of the form"),
        ("params.x=[]", "give at least one value"),
        ("params.x=[[1], 2]", "each value must be a single value"),
        ("params.x=[1", "not valid YAML"),
        ("params.x=1,{a: b}", "each value must be a single value"),
    ],
)
def test_parse_axis_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        ex.parse_axis(text)


def test_expand_sweep_is_the_cartesian_product_last_axis_fastest() -> None:
    points = ex.expand_sweep(["params.workers=1,2", "params.items=10,100,1000"])
    assert points == [
        {"params.workers": w, "params.items": i} for w in (1, 2) for i in (10, 100, 1000)
    ]
    assert ex.expand_sweep([]) == [{}]


def test_expand_sweep_refuses_an_axis_given_twice() -> None:
    with pytest.raises(ValueError, match="given twice"):
        ex.expand_sweep(["params.a=1", "params.a=2"])


@pytest.mark.parametrize(
    "value", [1, 2.5, 1e20, True, None, "fast", "1", "true", "a b", " x", "a=b", ""]
)
def test_point_overrides_read_back_as_the_same_value(value: Any) -> None:
    [text] = ex.point_overrides({"params.v": value})
    from topo.resolve import parse_override

    assert parse_override(text) == (["params", "v"], value)


# ----- finding runs -----------------------------------------------------------------------


def fake_run(
    root: Path,
    name: str,
    run_id: str,
    *,
    started: str,
    params: dict[str, Any] | None = None,
    spec: str = "params: {workers: 4, items: 10}\n",
    sweep: str | None = None,
    **fields: Any,
) -> Path:
    folder = root / name / sweep / name / run_id if sweep else root / name / run_id
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(spec, encoding="utf-8")
    doc = {
        "name": name,
        "status": "ok",
        "exit_code": 0,
        "seed": 1,
        "params": params if params is not None else {"workers": 4, "items": 10},
        "run_dir": str(folder),
        "duration_s": 1.5,
        "processes": {},
        "state": {},
        "manifest": {"started_at": started},
        **fields,
    }
    (folder / "run.json").write_text(json.dumps(doc), encoding="utf-8")
    return folder


@pytest.fixture
def three_runs(tmp_path: Path) -> Path:
    fake_run(tmp_path, "pipe", "20240101-100000-aaa111", started="2024-01-01T10:00:00+00:00")
    fake_run(
        tmp_path,
        "pipe",
        "20240101-110000-bbb222",
        started="2024-01-01T11:00:00+00:00",
        params={"workers": 8, "items": 10},
        sweep="sweep-20240101-105959-ccc333",
    )
    fake_run(tmp_path, "other", "20240102-090000-abc999", started="2024-01-02T09:00:00+00:00")
    (tmp_path / "pipe" / "20240103-000000-dead00").mkdir()  # no run.json: not a run
    return tmp_path


def test_list_runs_oldest_first_with_sweeps(three_runs: Path) -> None:
    ids = [r.id for r in ex.list_runs(three_runs)]
    assert ids == ["20240101-100000-aaa111", "20240101-110000-bbb222", "20240102-090000-abc999"]
    [in_sweep] = [r for r in ex.list_runs(three_runs) if r.sweep]
    assert in_sweep.sweep == "sweep-20240101-105959-ccc333"
    assert [r.id for r in ex.list_runs(three_runs, name="other")] == ["20240102-090000-abc999"]
    assert ex.list_runs(three_runs / "nothing-here") == []


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("last", "20240102-090000-abc999"),
        ("last~1", "20240101-110000-bbb222"),
        ("last~2", "20240101-100000-aaa111"),
        ("20240101-10", "20240101-100000-aaa111"),
        ("bbb", "20240101-110000-bbb222"),  # the hex part of the id
        ("abc9", "20240102-090000-abc999"),
    ],
)
def test_find_run(three_runs: Path, ref: str, expected: str) -> None:
    assert ex.find_run(ref, three_runs).id == expected


def test_find_run_by_path(three_runs: Path) -> None:
    folder = three_runs / "other" / "20240102-090000-abc999"
    assert ex.find_run(str(folder), three_runs).path == folder
    assert ex.find_run(folder / "run.json").path == folder


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("2024", "'2024' matches 3 runs (20240101-100000-aaa111, 20240101-110000-bbb222, "),
        ("a", "'a' matches 2 runs"),
        ("zzz", "no run under .* has an id starting with 'zzz'"),
        ("last~3", "'last~3': there are only 3 run"),
        ("no/such/dir", "is not a run directory"),
    ],
)
def test_find_run_errors(three_runs: Path, ref: str, message: str) -> None:
    with pytest.raises(ex.RunNotFound, match=message.replace("(", r"\(")):
        ex.find_run(ref, three_runs)


def test_find_run_with_no_runs(tmp_path: Path) -> None:
    with pytest.raises(ex.RunNotFound, match="there are no runs under"):
        ex.find_run("last", tmp_path)


# ----- params that differ -----------------------------------------------------------------


def test_changed_params() -> None:
    defaults = {"workers": 4, "items": 10, "queue": {"size": 16, "kind": "fifo"}, "on": True}
    assert ex.changed_params(defaults, defaults) == {}
    got = {"workers": 8, "items": 10, "queue": {"size": 32, "kind": "fifo"}, "on": 1, "new": "x"}
    assert ex.changed_params(got, defaults) == {
        "workers": 8,
        "queue.size": 32,
        "on": 1,  # 1 == True in Python, but not the same YAML value
        "new": "x",
    }


def test_run_changed_params_uses_the_spec_as_written_with_interpolation(tmp_path: Path) -> None:
    spec = "params: {items: 10, batch: '${params.items}', workers: 4}\n"
    folder = fake_run(
        tmp_path,
        "r",
        "20240101-000000-aaaaaa",
        started="x",
        spec=spec,
        params={"items": 20, "batch": 10, "workers": 4},
    )
    assert ex.run_changed_params(ex.find_run(folder)) == {"items": 20}


# ----- compare ----------------------------------------------------------------------------


def doc(**over: Any) -> dict[str, Any]:
    base = {
        "name": "p",
        "status": "ok",
        "exit_code": 0,
        "seed": 1,
        "duration_s": 1.0,
        "params": {"workers": 4, "q": {"size": 1}},
        "processes": {"w": {"exit_code": 0, "result": [1, 2], "duration_s": 0.5}},
        "state": {"total": 3},
        "manifest": {
            "python": {"version": "3.11.7", "implementation": "CPython"},
            "host": "a",
            "git": {"commit": "abc", "dirty": False},
            "topo_version": "0.1.0",
            "started_at": "t1",
        },
    }
    base.update(over)
    return base


def test_compare_same_runs_differ_only_in_incidentals() -> None:
    rows = ex.compare(doc(), doc(duration_s=2.0))
    assert [r for r in rows if not r.same] == [ex.Row("run", "duration_s", 1.0, 2.0)]
    assert all(r.incidental for r in rows if not r.same)
    keys = {(r.section, r.key) for r in rows}
    assert {
        ("params", "q.size"),
        ("environment", "python"),
        ("environment", "git commit"),
        ("environment", "topo"),
        ("instances", "w result"),
        ("instances", "w exit_code"),
        ("durations", "w"),
        ("state", "total"),
    } <= keys


def test_compare_lines_up_a_process_with_other_replica_counts() -> None:
    one = doc(processes={"w": {"exit_code": 0, "result": 10, "duration_s": 0.5}})
    four = doc(
        processes={
            f"w[{i}]": {"exit_code": 0, "result": i, "duration_s": 0.1 * i} for i in range(4)
        }
    )
    rows = {(r.section, r.key): (r.a, r.b) for r in ex.compare(one, four)}
    assert rows[("instances", "w (w / w[0..3]) result")] == (10, [0, 1, 2, 3])
    assert rows[("instances", "w (w / w[0..3]) exit_code")] == (0, [0, 0, 0, 0])
    assert ("instances", "w[0] result") not in rows


def test_compare_spreads_mapping_results_over_dotted_rows() -> None:
    a = doc(processes={"c": {"exit_code": 0, "result": {"count": 3, "rate": {"p50": 1.5}}}})
    b = doc(processes={"c": {"exit_code": 0, "result": {"count": 4, "rate": {"p50": 1.5}}}})
    rows = {(r.section, r.key): (r.a, r.b) for r in ex.compare(a, b)}
    assert rows[("instances", "c result.count")] == (3, 4)
    assert rows[("instances", "c result.rate.p50")] == (1.5, 1.5)
    assert ("instances", "c result") not in rows


def test_compare_shows_what_differs_and_what_one_side_lacks() -> None:
    b = doc(
        status="failed",
        exit_code=1,
        params={"workers": 8, "q": {"size": 1}},
        processes={"x": {"exit_code": 1, "result": None, "duration_s": 0.1}},
        state={"total": 4, "extra": [1]},
    )
    b["manifest"] = {**b["manifest"], "host": "b", "python": {"version": "3.12.0"}}
    differing = {(r.section, r.key): (r.a, r.b) for r in ex.compare(doc(), b) if not r.same}
    assert differing[("run", "status")] == ("ok", "failed")
    assert differing[("run", "exit_code")] == (0, 1)
    assert differing[("params", "workers")] == (4, 8)
    assert differing[("environment", "host")] == ("a", "b")
    assert differing[("environment", "python")] == ("CPython 3.11.7", "3.12.0")
    assert differing[("instances", "w result")] == ([1, 2], None)
    assert differing[("instances", "x exit_code")] == (None, 1)
    assert differing[("state", "total")] == (3, 4)
    assert differing[("state", "extra")] == (None, [1])
    assert ("params", "q.size") not in differing
    assert json.dumps([r.to_json() for r in ex.compare(doc(), b)])  # JSON-ready


# ----- code changes -----------------------------------------------------------------------


def test_code_changes_notices_an_edited_target(
    tmp_path: Path, write_module: Callable[..., Path]
) -> None:
    module = write_module(tmp_path, "exp_mod_cc", "def f():\n    return 1\n")
    manifest = {
        "spec_dir": str(tmp_path),
        "git": None,
        "targets": {"exp_mod_cc": {"file": str(module), "sha256": record.sha256_file(module)}},
    }
    assert ex.code_changes(manifest) == []
    module.write_text("def f():\n    return 2\n", encoding="utf-8")
    [note] = ex.code_changes(manifest)
    assert (
        note == f"target module 'exp_mod_cc' ({module}) has changed since the run (sha256 differs)"
    )
    module.unlink()
    assert ex.code_changes(manifest) == ["target module 'exp_mod_cc' is not found any more"]


def test_code_changes_notices_another_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = {"commit": "2" * 40, "dirty": True, "root": "/repo"}
    monkeypatch.setattr(record, "git_state", lambda folder: now)
    manifest = {"spec_dir": str(tmp_path), "git": {"commit": "1" * 40, "dirty": False}}
    assert ex.code_changes(manifest) == [
        "git commit is now 222222222222, the run was made at 111111111111",
        "the repository /repo has uncommitted changes now",
    ]
    assert ex.code_changes({"spec_dir": str(tmp_path / "gone")}) == [
        f"the spec's folder {tmp_path / 'gone'} is gone: targets cannot be imported from it"
    ]


# ----- run_sweep with a fake run ---------------------------------------------------------

SPEC = """\
name: tiny
seed: 100
params: {workers: 1, items: 10}
processes:
  w:
    target: os.path:join
    args: {a: x}
"""


class FakeRun:
    """Stands in for topo.api.run: records what it was asked, fails where told, and
    records the run in a RunFolder as topo.api.run does (without processes)."""

    def __init__(self, fail_when: Callable[[dict[str, Any]], bool] = lambda p: False) -> None:
        self.calls: list[tuple[dict[str, Any], int]] = []
        self.fail_when = fail_when
        self.result: Callable[[dict[str, Any], int], Any] = lambda p, s: {"n": p["items"]}

    def __call__(
        self, plan: Any, *, runs_dir: Path, manifest_extra: dict[str, Any] | None = None
    ) -> RunResult:
        params = dict(plan.params)
        self.calls.append((params, plan.seed))
        folder = record.RunFolder.create(plan, runs_dir, extra=manifest_extra)
        status = "failed" if self.fail_when(params) else "ok"
        result = RunResult(
            plan.name,
            status,  # type: ignore[arg-type]
            plan.seed,
            params,
            run_dir=str(folder.path),
            processes={"w": InstanceResult(0, self.result(params, plan.seed), state="exited")},
        )
        folder.finish(result)
        return result


def test_sweep_statistics_over_repeats(tmp_path: Path, write_spec: Callable[..., Path]) -> None:
    spec = write_spec(tmp_path, SPEC)

    def value(params: dict[str, Any], seed: int) -> Any:  # a number that varies by repeat
        return {"x": params["workers"] * 10 + seed % 100, "tag": "text", "on": True}

    fake = FakeRun()
    fake.result = value
    sweep = ex.run_sweep(
        spec, ["params.workers=1,2"], repeat=3, runs_dir=tmp_path / "runs", report=["w"], run=fake
    )
    stats = {s.point["params.workers"]: s for s in sweep.statistics()}
    one = stats["1"].measures
    assert stats["1"].ok == 3
    assert set(one) == {"duration_s", "w.x"}  # text and bools are not measures
    # seeds 100, 101, 102: x = 10, 11, 12
    assert (one["w.x"].mean, one["w.x"].min, one["w.x"].max, one["w.x"].n) == (11.0, 10, 12, 3)
    assert one["w.x"].std == pytest.approx(1.0)
    assert one["w.x"].text() == "11 ± 1 [10, 12]"
    assert stats["2"].measures["w.x"].mean == 21.0
    saved = json.loads((sweep.sweep_dir / "sweep.json").read_text(encoding="utf-8"))
    assert saved["statistics"][0]["measures"]["w.x"]["mean"] == 11.0


def test_run_sweep_runs_every_point_with_repeat_seeds(
    tmp_path: Path, write_spec: Callable[..., Path]
) -> None:
    spec = write_spec(tmp_path, SPEC)
    fake = FakeRun()
    sweep = ex.run_sweep(
        spec,
        ["params.workers=1,2", "params.items=5,50"],
        repeat=2,
        runs_dir=tmp_path / "runs",
        report=["w"],
        run=fake,
    )
    assert [(p["workers"], p["items"], s) for p, s in fake.calls] == [
        (w, i, s) for w in (1, 2) for i in (5, 50) for s in (100, 101)
    ]
    assert sweep.exit_code == 0 and sweep.status == "ok" and sweep.seeds == "base+repeat"
    assert sweep.sweep_dir.parent == tmp_path / "runs" / "tiny"
    header, rows = sweep.table()
    assert header == [
        "run", "params.workers", "params.items", "repeat", "seed", "status", "duration_s",
        "w.n", "run_dir",
    ]  # fmt: skip
    assert rows[1][:6] == ["2", "1", "5", "1", "101", "ok"]
    assert rows[1][7] == "5"
    csv_text = (sweep.sweep_dir / "summary.csv").read_text(encoding="utf-8")
    assert csv_text == sweep.csv_text() and len(csv_text.splitlines()) == 9
    saved = json.loads((sweep.sweep_dir / "sweep.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(sweep.to_json()))
    first = json.loads((Path(rows[0][-1]) / "run.json").read_text(encoding="utf-8"))
    assert first["manifest"]["sweep"]["point"] == {"params.workers": 1, "params.items": 5}
    assert Path(rows[0][-1]).parent == sweep.sweep_dir / "tiny"


def test_run_sweep_sets_each_point_and_api_override_as_it_is(
    tmp_path: Path, write_spec: Callable[..., Path]
) -> None:
    spec = write_spec(tmp_path, SPEC)
    fake = FakeRun()
    axes = [ex.Axis("+params.label", ("8", 8))]
    ex.run_sweep(spec, axes, {"+params.tag": "true"}, runs_dir=tmp_path / "runs", run=fake)
    assert [(p["label"], p["tag"]) for p, _ in fake.calls] == [("8", "true"), (8, "true")]


def test_a_sweep_over_a_path_the_spec_lacks_is_refused_before_anything_runs(
    tmp_path: Path, write_spec: Callable[..., Path]
) -> None:
    spec = write_spec(tmp_path, SPEC)
    fake = FakeRun()
    with pytest.raises(ex.UsageError) as refused:
        ex.run_sweep(spec, ["params.wrokers=1,2"], runs_dir=tmp_path / "runs", run=fake)
    assert str(refused.value) == (
        "--sweep params.wrokers: params.wrokers is not in the spec (did you mean "
        "params.workers?); to add it, write +params.wrokers=..."
    )
    assert fake.calls == [] and not (tmp_path / "runs").exists()
    added = ex.run_sweep(spec, ["+params.extra=1,2"], runs_dir=tmp_path / "runs", run=fake)
    assert [p["extra"] for p, _ in fake.calls] == [1, 2]
    assert added.status == "ok"


def test_run_sweep_stops_at_the_first_failure_unless_keep_going(
    tmp_path: Path, write_spec: Callable[..., Path]
) -> None:
    spec = write_spec(tmp_path, SPEC)
    axes = ["params.workers=1,2,3"]

    def fails(p: dict[str, Any]) -> bool:
        return bool(p["workers"] == 2)

    stopped = ex.run_sweep(spec, axes, runs_dir=tmp_path, run=FakeRun(fails))
    assert [r.status for r in stopped.runs] == ["ok", "failed"]
    assert stopped.exit_code == 1
    going = ex.run_sweep(spec, axes, runs_dir=tmp_path, run=FakeRun(fails), keep_going=True)
    assert [r.status for r in going.runs] == ["ok", "failed", "ok"]
    assert going.exit_code == 1 and going.status == "failed"


def test_run_sweep_records_an_invalid_point(
    tmp_path: Path, write_spec: Callable[..., Path]
) -> None:
    spec = write_spec(tmp_path, SPEC.replace("args: {a: x}", "args: {a: x}\n    replicas: 1"))
    sweep = ex.run_sweep(
        spec, ["processes.w.replicas=1,0"], runs_dir=tmp_path, run=FakeRun(), keep_going=True
    )
    assert [r.status for r in sweep.runs] == ["ok", "invalid"]
    assert sweep.exit_code == 2
    invalid = sweep.to_json()["runs"][1]  # the "invalid" document, plus its place and seed
    assert set(invalid) == {
        "index", "point", "repeat", "name", "status", "exit_code", "diagnostics", "seed"
    }  # fmt: skip
    assert (invalid["name"], invalid["status"], invalid["exit_code"]) == ("tiny", "invalid", 2)
    assert [d["code"] for d in invalid["diagnostics"]] == ["T011"]


def test_run_sweep_without_a_seed_uses_fresh_ones(
    tmp_path: Path, write_spec: Callable[..., Path]
) -> None:
    spec = write_spec(tmp_path, SPEC.replace("seed: 100\n", ""))
    fake = FakeRun()
    sweep = ex.run_sweep(spec, [], repeat=3, runs_dir=tmp_path, run=fake)
    assert sweep.seeds == "fresh" and sweep.base_seed is None
    seeds = [s for _, s in fake.calls]
    assert len(set(seeds)) == 3
    assert [r.seed for r in sweep.runs] == seeds


def test_run_sweep_refuses_bad_input_before_running(
    tmp_path: Path, write_spec: Callable[..., Path]
) -> None:
    spec = write_spec(tmp_path, SPEC)
    fake = FakeRun()
    with pytest.raises(ValueError, match="at least 1"):
        ex.run_sweep(spec, [], repeat=0, runs_dir=tmp_path, run=fake)
    with pytest.raises(ValueError, match="not of the form"):
        ex.run_sweep(spec, ["params.x"], runs_dir=tmp_path, run=fake)
    assert fake.calls == []


def test_reported_columns() -> None:
    processes = {
        "c": InstanceResult(0, {"count": 3, "nested": {"a": 1}}),
        "w[0]": InstanceResult(0, 5),
        "w[1]": InstanceResult(0, [1, 2]),
        "wx": InstanceResult(0, "no"),
    }
    assert ex.reported(processes, ["c", "w"]) == {
        "c.count": "3",
        "c.nested.a": "1",
        "w[0]": "5",
        "w[1]": "[1, 2]",
    }
    assert ex.reported(processes, ["w[1]"]) == {"w[1]": "[1, 2]"}
