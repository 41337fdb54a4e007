"""Experiments through the real CLI: sweeps, runs, show, rerun, compare, and the records
left by runs that end badly (Ctrl-C, deadlock).

The specs are tiny and live in tmp_path beside their target module, so that rerun has
to import targets from the recorded spec folder; every command gets ``--runs-dir``.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import LiveTopo, TopoRun

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / "specs" / "pipeline.yaml"

DICE = '''\
import random
import time


def roll(n, faces, ctx):
    """n seeded rolls of a die with ``faces`` faces."""
    return [random.randint(1, faces) for _ in range(n)]


def maybe_fail(fail):
    if fail:
        raise RuntimeError("asked to fail")
    return "fine"


def relay(inbox, outbox):
    outbox.put(inbox.get())  # both relays wait for the other: a deadlock


def nap(seconds):
    time.sleep(seconds)
    return seconds
'''

SPECS = {
    "dice.yaml": """\
        seed: 7
        params: {n: 3, faces: 6}
        processes:
          roller:
            target: dice:roll
            args: {n: "${params.n}", faces: "${params.faces}"}
        """,
    "unseeded.yaml": """\
        params: {n: 3, faces: 6}
        processes:
          roller:
            target: dice:roll
            args: {n: "${params.n}", faces: "${params.faces}"}
        """,
    "flaky.yaml": """\
        params: {fail: false}
        processes:
          job:
            target: dice:maybe_fail
            args: {fail: "${params.fail}"}
        """,
    "deadlock.yaml": """\
        channels: {ping: queue, pong: queue}
        processes:
          left: {target: "dice:relay", inputs: {inbox: ping}, outputs: {outbox: pong}}
          right: {target: "dice:relay", inputs: {inbox: pong}, outputs: {outbox: ping}}
        """,
    "sleepy.yaml": """\
        processes:
          sleeper: {target: "dice:nap", args: {seconds: 30}}
        """,
}

Run = Callable[..., "TopoRun"]


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """A folder with the specs above and their module ``dice.py``."""
    folder = tmp_path / "lab"
    folder.mkdir()
    (folder / "dice.py").write_text(DICE, encoding="utf-8")
    for name, text in SPECS.items():
        (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def events(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def summary(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "run.json").read_text(encoding="utf-8")))


def results_and_state(doc: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    return {name: r["result"] for name, r in doc["processes"].items()}, doc["state"]


# ----- sweeps -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_two_axis_sweep_with_repeats(run_topo: Run, lab: Path, runs: Path) -> None:
    run = run_topo(
        "run", str(lab / "dice.yaml"), "-q", "--json", "--runs-dir", str(runs),
        "--sweep", "params.n=1,2", "--sweep", "params.faces=6,20", "--repeat", "2",
        "--report", "roller",
    )  # fmt: skip
    assert run.returncode == 0, str(run)
    doc = run.doc
    assert doc["status"] == "ok" and doc["exit_code"] == 0
    assert doc["axes"] == {"params.n": [1, 2], "params.faces": [6, 20]}
    assert doc["repeat"] == 2 and doc["seeds"] == "base+repeat" and doc["base_seed"] == 7
    points = [
        (r["point"]["params.n"], r["point"]["params.faces"], r["repeat"]) for r in doc["runs"]
    ]
    assert points == [(n, f, r) for n in (1, 2) for f in (6, 20) for r in (0, 1)]
    assert [r["seed"] for r in doc["runs"]] == [7, 8] * 4
    for r in doc["runs"]:
        rolls = r["processes"]["roller"]["result"]
        assert len(rolls) == r["point"]["params.n"] == r["params"]["n"]
        assert all(1 <= x <= r["params"]["faces"] for x in rolls)

    sweep_dir = Path(doc["sweep_dir"])
    assert sweep_dir.parent == runs / "dice" and sweep_dir.name.startswith("sweep-")
    run_dirs = sorted((sweep_dir / "dice").iterdir())
    assert len(run_dirs) == 8
    assert sorted(str(d) for d in run_dirs) == sorted(r["run_dir"] for r in doc["runs"])
    for d in run_dirs:
        recorded = summary(d)
        assert recorded["status"] == "ok"
        assert recorded["manifest"]["sweep"]["dir"] == str(sweep_dir)
        assert (d / "spec.yaml").is_file() and (d / "logs").is_dir()

    with open(sweep_dir / "summary.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    assert list(rows[0])[:7] == [
        "run", "params.n", "params.faces", "repeat", "seed", "status", "duration_s",
    ]  # fmt: skip
    assert [(r["params.n"], r["params.faces"], r["repeat"], r["seed"]) for r in rows[:2]] == [
        ("1", "6", "0", "7"),
        ("1", "6", "1", "8"),
    ]
    assert {r["status"] for r in rows} == {"ok"}
    assert [json.loads(r["roller"]) for r in rows] == [
        r["processes"]["roller"]["result"] for r in doc["runs"]
    ]
    assert "params.faces" in run.stderr and "8/8 ok" in run.stderr  # the summary table

    listed = run_topo("runs", "--runs-dir", str(runs), "--json")
    assert len(listed.doc) == 8
    assert {r["sweep"] for r in listed.doc} == {sweep_dir.name}
    assert listed.doc[-1]["changed_params"] == {"n": 2, "faces": 20}


@pytest.mark.timeout(60)
def test_sweep_stops_at_the_first_failure_unless_keep_going(
    run_topo: Run, lab: Path, runs: Path
) -> None:
    args = ("run", str(lab / "flaky.yaml"), "-q", "--json", "--runs-dir", str(runs))
    axis = ("--sweep", "params.fail=false,true,false")
    stopped = run_topo(*args, *axis)
    assert stopped.returncode == 1, str(stopped)
    assert [r["status"] for r in stopped.doc["runs"]] == ["ok", "failed"]
    assert stopped.doc["status"] == "failed" and stopped.doc["exit_code"] == 1

    going = run_topo(*args, *axis, "--keep-going", "--report", "job")
    assert going.returncode == 1, str(going)
    assert [r["status"] for r in going.doc["runs"]] == ["ok", "failed", "ok"]
    with open(Path(going.doc["sweep_dir"]) / "summary.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["params.fail"], r["status"], r["job"]) for r in rows] == [
        ("false", "ok", "fine"),
        ("true", "failed", "null"),
        ("false", "ok", "fine"),
    ]


@pytest.mark.timeout(60)
def test_repeats_of_an_unseeded_spec_get_fresh_seeds(run_topo: Run, lab: Path, runs: Path) -> None:
    run = run_topo(
        "run", str(lab / "unseeded.yaml"), "-q", "--json", "--runs-dir", str(runs),
        "--repeat", "2", "--set", "params.n=20",
    )  # fmt: skip
    assert run.returncode == 0, str(run)
    assert run.doc["seeds"] == "fresh" and run.doc["base_seed"] is None
    first, second = run.doc["runs"]
    assert first["seed"] != second["seed"]
    for r in (first, second):
        assert summary(Path(r["run_dir"]))["manifest"]["seed"] == r["seed"]  # recorded


def test_bad_sweep_is_a_usage_error(run_topo: Run, lab: Path, runs: Path) -> None:
    run = run_topo("run", str(lab / "dice.yaml"), "--runs-dir", str(runs), "--sweep", "params.n")
    assert run.returncode == 2, str(run)
    assert "--sweep 'params.n' is not of the form dotted.key=value1,value2" in run.stderr
    assert not runs.exists()  # nothing ran


@pytest.mark.timeout(60)
def test_a_misspelled_override_is_refused_and_plus_adds_a_key(run_topo: Run, runs: Path) -> None:
    # It ran with {'workers': 4, 'wrokers': 8} and said ok (issue 14).
    base = ("run", str(PIPELINE), "--runs-dir", str(runs), "-q")
    typo = run_topo(*base, "--set", "params.wrokers=8")
    assert typo.returncode == 2, str(typo)
    assert typo.stderr.splitlines()[0] == (
        f"{PIPELINE}: error[T021]: --set 'params.wrokers=8': params.wrokers is not in the "
        "spec (did you mean params.workers?); to add it, write +params.wrokers=..."
    )
    swept = run_topo(*base, "--sweep", "params.wrokers=1,2")
    assert swept.returncode == 2, str(swept)
    assert "topo: error: --sweep params.wrokers: params.wrokers is not in the spec" in swept.stderr
    assert not runs.exists()  # nothing ran
    added = run_topo(*base, "--json", "--set", "+params.wrokers=8", "--set", "params.items=10")
    doc = added.ok()
    assert doc["params"] == {"items": 10, "workers": 4, "wrokers": 8}
    again = run_topo("rerun", "last", "-q", "--json", "--runs-dir", str(runs)).ok()
    assert again["params"] == doc["params"]  # the record keeps the +


@pytest.mark.timeout(60)
def test_every_lifecycle_line_in_order_in_a_pipe(run_topo: Run, runs: Path) -> None:
    # Piped, `-q 2>&1 | grep -c exited` gave 0 to 3 of 6 (lines came from samples).
    run = run_topo("run", str(PIPELINE), "--runs-dir", str(runs), "-q")
    assert run.returncode == 0, str(run)
    lines = [line for line in run.stderr.splitlines() if line.startswith("topo: ")]
    names = ["producer", *(f"worker[{i}]" for i in range(4)), "collector"]
    for name in names:
        started = lines.index(next(x for x in lines if x.startswith(f"topo: {name} running")))
        assert lines.index(f"topo: {name} exited (0)") > started
    assert sum(line.endswith("exited (0)") for line in lines) == 6


@pytest.mark.timeout(60)
def test_a_quiet_sweep_says_one_line_per_run(run_topo: Run, runs: Path) -> None:
    run = run_topo(
        "run", str(PIPELINE), "--runs-dir", str(runs), "-q", "--sweep", "params.workers=1,2"
    )
    assert run.returncode == 0, str(run)
    lines = [line for line in run.stderr.splitlines() if line.startswith("topo: ")]
    assert [re.sub(r"in [0-9.]+s", "in Ts", line) for line in lines[:2]] == [
        "topo: sweep run 1/2: params.workers=1, seed 1234: ok in Ts",
        "topo: sweep run 2/2: params.workers=2, seed 1234: ok in Ts",
    ]
    assert lines[2].startswith("topo: sweep recorded in ")


@pytest.mark.timeout(60)
def test_the_summary_shows_the_final_state_and_show_the_exception(
    run_topo: Run, runs: Path
) -> None:
    values = REPO / "specs" / "shared_value.yaml"
    run = run_topo("run", str(values), "--runs-dir", str(runs), "-q", "--json")
    doc = run.ok()
    for key, value in doc["state"].items():  # in the human summary too, not only JSON
        assert f"state {key} = {json.dumps(value)}" in run.stderr.splitlines()
    faults = REPO / "tests" / "e2e" / "faults"
    failed = run_topo("run", str(faults / "raises.yaml"), "--runs-dir", str(runs), "-q")
    assert failed.returncode == 1, str(failed)
    shown = run_topo("show", "last", "--runs-dir", str(runs))
    assert shown.returncode == 0, str(shown)
    lines = shown.stderr.splitlines()
    at = lines.index("  boom raised:")  # not only its exit code
    assert any(line.strip() == "ValueError: kaboom" for line in lines[at:])
    assert any("raise ValueError(message)" in line for line in lines[at:])


@pytest.mark.timeout(90)
def test_rerun_of_a_sweep_runs_again_only_what_did_not_end_ok(
    run_topo: Run, tmp_path: Path, runs: Path
) -> None:
    (tmp_path / "fragile.py").write_text(
        "import os\n"
        "def job(n, marker):\n"
        "    if n == 2 and not os.path.exists(marker):\n"
        "        raise SystemExit(1)\n"
        "    return {'value': n * 10}\n"
    )
    marker = tmp_path / "fixed"
    spec = tmp_path / "fragile.yaml"
    spec.write_text(
        "seed: 5\n"
        f"params: {{n: 1, marker: {marker}}}\n"
        "processes:\n"
        "  job: {target: 'fragile:job', args: {n: '${params.n}', marker: '${params.marker}'}}\n"
    )
    made = run_topo(
        "run", str(spec), "-q", "--json", "--runs-dir", str(runs),
        "--sweep", "params.n=1,2,3", "--repeat", "2", "--report", "job",
    )  # fmt: skip
    assert made.returncode == 1, str(made)  # stopped at run 3 (n=2)
    first = made.doc
    assert [r["status"] for r in first["runs"]] == ["ok", "ok", "failed"]
    marker.write_text("")  # the bug is fixed: the failed point and the rest can run
    again = run_topo("rerun", "last", "--failed", "-q", "--json", "--runs-dir", str(runs))
    assert again.returncode == 0, str(again)
    doc = again.doc
    assert doc["sweep_dir"] == first["sweep_dir"]  # the same sweep
    assert [(r["index"], r["point"]["params.n"], r["repeat"], r["seed"]) for r in doc["runs"]] == [
        (i + 1, n, r, 5 + r) for i, (n, r) in enumerate((n, r) for n in (1, 2, 3) for r in (0, 1))
    ]
    assert all(r["status"] == "ok" for r in doc["runs"])
    assert [r["run_dir"] for r in doc["runs"][:2]] == [r["run_dir"] for r in first["runs"][:2]]
    assert doc["runs"][2]["run_dir"] != first["runs"][2]["run_dir"]  # run again
    csv_rows = list(csv.DictReader(io.StringIO(
        (Path(doc["sweep_dir"]) / "summary.csv").read_text(encoding="utf-8")
    )))  # fmt: skip
    assert [row["job.value"] for row in csv_rows] == ["10", "10", "20", "20", "30", "30"]
    assert [s["measures"]["job.value"]["mean"] for s in doc["statistics"]] == [10, 20, 30]
    nothing = run_topo("rerun", "last", "--failed", "-q", "--json", "--runs-dir", str(runs))
    assert nothing.returncode == 0 and len(nothing.doc["runs"]) == 6  # nothing left to do


@pytest.mark.timeout(60)
def test_a_spec_laid_over_another_and_a_dotenv(
    run_topo: Run, lab: Path, runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docker compose's -f: later files win, mappings merge; .env feeds ${env.X}.
    (lab / "dice.yaml").write_text(
        "seed: 7\nparams: {n: 3, faces: 6, who: '${env.WHO}'}\n"
        "processes:\n  roller:\n    target: dice:roll\n"
        "    args: {n: '${params.n}', faces: '${params.faces}'}\n"
    )
    (lab / "big.yaml").write_text("params: {faces: 20}\nprocesses:\n  roller: {replicas: 2}\n")
    (lab / ".env").write_text("# read as docker compose reads it\nWHO=from-dotenv\n")
    monkeypatch.delenv("WHO", raising=False)
    base = ("run", str(lab / "dice.yaml"), "-f", str(lab / "big.yaml"), "--runs-dir", str(runs))
    doc = run_topo(*base, "-q", "--json").ok()
    assert doc["params"] == {"n": 3, "faces": 20, "who": "from-dotenv"}
    assert sorted(doc["processes"]) == ["roller[0]", "roller[1]"]
    manifest = summary(Path(doc["run_dir"]))["manifest"]
    assert manifest["spec_files"] == [str(lab / "dice.yaml"), str(lab / "big.yaml")]
    monkeypatch.setenv("WHO", "from-env")  # the environment wins over .env
    assert run_topo(*base, "-q", "--json").ok()["params"]["who"] == "from-env"
    # a problem is reported in the file and at the line that wrote it
    (lab / "bad.yaml").write_text("processes:\n  roller:\n    replica: 2\n")
    bad = run_topo("validate", str(lab / "dice.yaml"), "-f", str(lab / "bad.yaml"))
    assert bad.returncode == 2, str(bad)
    assert bad.stderr.startswith(f"{lab / 'bad.yaml'}:3:5: error[T010]: unknown key 'replica'")


@pytest.mark.timeout(90)
def test_a_sweep_runs_points_at_a_time_without_oversubscribing(
    run_topo: Run, tmp_path: Path, runs: Path
) -> None:
    (tmp_path / "nap.py").write_text(
        "import time\n"
        "def nap(tag):\n"
        "    start = time.time()\n"
        "    time.sleep(0.8)\n"
        "    return {'start': start, 'end': time.time()}\n"
    )
    spec = tmp_path / "nap.yaml"
    spec.write_text("seed: 3\nparams: {tag: a}\nprocesses:\n  napper: {target: 'nap:nap', "
                    "args: {tag: '${params.tag}'}}\n")  # fmt: skip
    sweep = ("run", str(spec), "-q", "--json", "--runs-dir", str(runs), "--report", "napper")
    cpus = len(os.sched_getaffinity(0))
    refused = run_topo(*sweep, "--sweep", "params.tag=a,b", "-j", str(cpus + 1))
    assert refused.returncode == 2, str(refused)
    assert f"on {cpus} CPU(s): they would share them" in refused.stderr
    assert not runs.exists()  # nothing ran
    run = run_topo(*sweep, "--sweep", "params.tag=a,b,c,d", "-j", "2", "--oversubscribe")
    assert run.returncode == 0, str(run)
    doc = run.doc
    assert [(r["index"], r["point"]["params.tag"], r["status"]) for r in doc["runs"]] == [
        (1, "a", "ok"), (2, "b", "ok"), (3, "c", "ok"), (4, "d", "ok"),
    ]  # fmt: skip
    naps = [r["processes"]["napper"]["result"] for r in doc["runs"]]
    spans = [(nap["start"], nap["end"]) for nap in naps]  # two at a time: some overlap
    assert any(a[0] < b[1] and b[0] < a[1] for a, b in itertools.combinations(spans, 2))
    for r in doc["runs"]:  # each a run of the sweep, recorded as such
        assert summary(Path(r["run_dir"]))["manifest"]["sweep"]["index"] == r["index"]
    rows = (Path(doc["sweep_dir"]) / "summary.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["1", "2", "3", "4"]


# ----- runs, show, compare ---------------------------------------------------------------


@pytest.mark.timeout(60)
def test_runs_show_and_compare(run_topo: Run, lab: Path, runs: Path) -> None:
    spec = str(lab / "dice.yaml")
    first = run_topo("run", spec, "-q", "--json", "--runs-dir", str(runs)).ok()
    second = run_topo(
        "run", spec, "-q", "--json", "--runs-dir", str(runs), "--set", "params.n=5"
    ).ok()
    first_dir, second_dir = Path(first["run_dir"]), Path(second["run_dir"])

    listed = run_topo("runs", "--runs-dir", str(runs))
    assert listed.returncode == 0, str(listed)
    lines = [line for line in listed.stderr.splitlines() if "dice" in line]
    assert len(lines) == 2
    assert first_dir.name in lines[0] and "ok" in lines[0] and "n=5" not in lines[0]
    assert second_dir.name in lines[1] and "n=5" in lines[1]
    last_one = run_topo("runs", "--runs-dir", str(runs), "--last", "1", "--name", "dice")
    assert first_dir.name not in last_one.stderr and second_dir.name in last_one.stderr
    none = run_topo("runs", "--runs-dir", str(runs), "--name", "other", "--json")
    assert none.doc == []

    shown = run_topo("show", "last", "--runs-dir", str(runs))
    assert shown.returncode == 0, str(shown)
    assert f"dice {second_dir.name}: ok (exit code 0)" in shown.stderr
    assert "n=5*" in shown.stderr and "faces=6 " in shown.stderr
    assert json.dumps(second["processes"]["roller"]["result"]) in shown.stderr
    assert str(second_dir / "logs") in shown.stderr

    by_hex = run_topo("show", first_dir.name.rsplit("-", 1)[1], "--runs-dir", str(runs), "--json")
    assert by_hex.doc["run_dir"] == str(first_dir)
    assert by_hex.doc["manifest"]["params"] == {"n": 3, "faces": 6}
    by_path = run_topo("show", str(second_dir), "--json")
    assert by_path.doc == summary(second_dir)
    ambiguous = run_topo("show", first_dir.name[:4], "--runs-dir", str(runs))
    assert ambiguous.returncode == 2
    assert f"{first_dir.name[:4]!r} matches 2 runs" in ambiguous.stderr
    assert first_dir.name in ambiguous.stderr and second_dir.name in ambiguous.stderr
    missing = run_topo("show", "ffffffffff", "--runs-dir", str(runs))
    assert missing.returncode == 2 and "no run under" in missing.stderr

    compared = run_topo("compare", "last~1", "last", "--runs-dir", str(runs), "--json")
    assert compared.returncode == 0, str(compared)
    rows = {(r["section"], r["key"]): r for r in compared.doc["rows"]}
    assert rows[("params", "n")]["a"] == 3 and rows[("params", "n")]["b"] == 5
    assert not rows[("params", "n")]["same"]
    assert rows[("params", "faces")]["same"]
    assert rows[("environment", "python")]["same"] and rows[("environment", "host")]["same"]
    assert rows[("run", "status")]["same"] and rows[("run", "seed")]["same"]
    assert not rows[("instances", "roller result")]["same"]
    assert rows[("durations", "roller")]["incidental"]
    table = run_topo("compare", str(first_dir), str(second_dir))
    assert table.returncode == 0, str(table)
    assert "≠" in table.stderr and "difference(s)" in table.stderr


# ----- rerun ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_rerun_of_the_seeded_pipeline_reproduces_its_results(run_topo: Run, runs: Path) -> None:
    sets = ("--set", "params.workers=1", "--set", "params.items=200")
    original = run_topo("run", str(PIPELINE), "-q", "--json", "--runs-dir", str(runs), *sets).ok()
    again = run_topo("rerun", "last", "-q", "--json", "--runs-dir", str(runs))
    doc = again.ok()
    assert doc["run_dir"] != original["run_dir"]
    assert doc["seed"] == original["seed"] == 1234
    assert doc["params"] == original["params"] == {"items": 200, "workers": 1}
    assert results_and_state(doc) == results_and_state(original)
    recorded, source = summary(Path(doc["run_dir"])), summary(Path(original["run_dir"]))
    assert recorded["manifest"]["seeds"] == source["manifest"]["seeds"]
    assert recorded["manifest"]["spec_dir"] == str(PIPELINE.parent)
    assert recorded["manifest"]["rerun_of"]["run_dir"] == original["run_dir"]
    assert f"running {Path(original['run_dir']).name} again (seed 1234)" in again.stderr


@pytest.mark.timeout(60)
def test_rerun_imports_targets_from_the_spec_folder_and_says_when_code_changed(
    run_topo: Run, lab: Path, runs: Path
) -> None:
    original = run_topo("run", str(lab / "dice.yaml"), "-q", "--json", "--runs-dir", str(runs))
    original_doc = original.ok()
    run_id = Path(original_doc["run_dir"]).name

    again = run_topo("rerun", run_id, "-q", "--json", "--runs-dir", str(runs))
    assert results_and_state(again.ok()) == results_and_state(original_doc)
    assert "target module 'dice'" not in again.stderr

    with open(lab / "dice.py", "a", encoding="utf-8") as f:
        f.write("# edited after the run\n")
    changed = run_topo("rerun", run_id, "-q", "--json", "--runs-dir", str(runs))
    assert results_and_state(changed.ok()) == results_and_state(original_doc)
    assert "warning: code differs from the record: target module 'dice'" in changed.stderr
    assert "has changed since the run (sha256 differs)" in changed.stderr

    more = run_topo(
        "rerun", run_id, "-q", "--json", "--runs-dir", str(runs), "--set", "params.n=6"
    ).ok()
    assert more["name"] == "dice" and more["seed"] == 7
    assert more["params"] == {"n": 6, "faces": 6}
    assert len(more["processes"]["roller"]["result"]) == 6
    # the same seed: the first rolls are the original ones
    assert (
        more["processes"]["roller"]["result"][:3] == original_doc["processes"]["roller"]["result"]
    )


# ----- records of runs that end badly ----------------------------------------------------


def check_record(run_dir: Path, status: str, exit_code: int, instances: set[str]) -> None:
    """run.json says how the run ended, and events.jsonl tells the same story."""
    recorded = summary(run_dir)
    assert recorded["status"] == status and recorded["exit_code"] == exit_code
    assert set(recorded["processes"]) == instances
    assert {"seed", "params", "manifest", "duration_s", "state"} <= set(recorded)
    lines = events(run_dir)
    assert all({"time", "event"} <= set(line) for line in lines)
    assert {line["instance"] for line in lines if line["event"] == "start"} == instances
    [ending] = [line for line in lines if line["event"] == status]
    assert ending["message"] == recorded["message"]
    assert lines[-1]["time"] >= ending["time"]
    assert (run_dir / "spec.yaml").is_file() and (run_dir / "resolved.yaml").is_file()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]  # no temporary files


@pytest.mark.timeout(60)
def test_sigint_leaves_a_complete_record(
    start_topo: Callable[..., LiveTopo], run_topo: Run, lab: Path, runs: Path
) -> None:
    live = start_topo("run", str(lab / "sleepy.yaml"), "-q", "--json", "--runs-dir", str(runs))
    live.wait_for("sleeper running")
    live.signal(signal.SIGINT)
    run = live.finish()
    assert run.returncode == 130, str(run)
    assert run.doc["status"] == "interrupted"
    run_dir = Path(run.doc["run_dir"])
    check_record(run_dir, "interrupted", 130, {"sleeper"})
    assert summary(run_dir)["message"] == "interrupted by Ctrl-C (SIGINT)"
    shown = run_topo("show", "last", "--runs-dir", str(runs))
    assert f"sleepy {run_dir.name}: interrupted (exit code 130)" in shown.stderr


@pytest.mark.timeout(60)
def test_deadlock_leaves_a_complete_record(run_topo: Run, lab: Path, runs: Path) -> None:
    run = run_topo("run", str(lab / "deadlock.yaml"), "-q", "--json", "--runs-dir", str(runs))
    assert run.returncode == 3, str(run)
    run_dir = Path(run.doc["run_dir"])
    check_record(run_dir, "deadlock", 3, {"left", "right"})
    assert summary(run_dir)["message"].startswith("deadlock: ")
    listed = run_topo("runs", "--runs-dir", str(runs), "--json")
    assert [r["status"] for r in listed.doc] == ["deadlock"]
