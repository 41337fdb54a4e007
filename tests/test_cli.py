"""topo.cli: the typer app through CliRunner, and ``python -m topo`` as a subprocess."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from topo.cli import app
from topo.errors import RunError

REPO = Path(__file__).resolve().parents[1]
GOOD = REPO / "specs" / "pipeline.yaml"

BAD = """\
processes:
  p:
    target: os.path:join
    replica: 2
"""
BAD_MESSAGE = (
    "4:5: error[T010]: unknown key 'replica' in process 'p' (did you mean 'replicas'?): "
    "topo does not know what to do with it"
)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"})


@pytest.fixture
def bad_spec(tmp_path: Path, write_spec: Callable[..., Path]) -> Path:
    return write_spec(tmp_path, BAD, name="bad.yaml")


def test_help(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("validate", "run", "schema"):
        assert command in result.stdout


def test_schema_prints_json(runner: CliRunner) -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "topo spec"
    assert "processes" in schema["properties"]
    assert result.stderr == ""


def test_validate_good_spec(runner: CliRunner) -> None:
    result = runner.invoke(app, ["validate", str(GOOD)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == "1 spec(s) valid.\n"


def test_validate_bad_spec(runner: CliRunner, bad_spec: Path) -> None:
    result = runner.invoke(app, ["validate", str(bad_spec)])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"{bad_spec}:{BAD_MESSAGE}"
    assert lines[1] == "     4 |     replica: 2"
    assert lines[2] == "       |     ^"
    assert lines[-1] == "Found 1 error(s) and 0 warning(s) in 1 spec(s)."
    assert "Traceback" not in result.output


def test_validate_several_specs(runner: CliRunner, bad_spec: Path) -> None:
    result = runner.invoke(app, ["validate", str(GOOD), str(bad_spec), str(bad_spec)])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == "Found 2 error(s) and 0 warning(s) in 3 spec(s)."


def test_validate_json(runner: CliRunner, bad_spec: Path) -> None:
    # the document of `topo run --json` for an invalid spec, not a bare list of diagnostics
    result = runner.invoke(app, ["validate", "--json", str(bad_spec)])
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "name": "bad",
        "status": "invalid",
        "exit_code": 2,
        "diagnostics": [
            {
                "path": str(bad_spec),
                "line": 4,
                "col": 5,
                "severity": "error",
                "code": "T010",
                "message": BAD_MESSAGE.split(": ", 2)[2],
            }
        ],
    }


def test_validate_json_of_a_good_spec(runner: CliRunner) -> None:
    result = runner.invoke(app, ["validate", "--json", "--strict", str(GOOD)])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "name": "pipeline",
        "status": "ok",
        "exit_code": 0,
        "diagnostics": [],
    }


def test_validate_json_of_several_specs(runner: CliRunner, bad_spec: Path) -> None:
    result = runner.invoke(app, ["validate", "--json", str(GOOD), str(bad_spec)])
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["name"] is None and doc["status"] == "invalid"
    assert [d["path"] for d in doc["diagnostics"]] == [str(bad_spec)]


def test_validate_with_set(
    runner: CliRunner,
    tmp_path: Path,
    write_spec: Callable[..., Path],
    write_module: Callable[..., Path],
) -> None:
    write_module(tmp_path, "cli_targets", "def work():\n    pass\n")
    path = write_spec(
        tmp_path,
        "params: {n: 1}\nprocesses:\n  p:\n    target: cli_targets:work\n"
        "    replicas: '${params.n}'\n",
    )
    assert runner.invoke(app, ["validate", str(path), "--set", "params.n=2"]).exit_code == 0
    result = runner.invoke(app, ["validate", str(path), "--set", "params.n=0"])
    assert result.exit_code == 2
    assert "error[T011]: process 'p', key 'replicas'" in result.stderr
    result = runner.invoke(app, ["validate", str(path), "--set", "oops"])
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"{path}: error[T021]: --set 'oops' is not of the form dotted.key=value"
    )


def test_validate_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = runner.invoke(app, ["validate", str(missing)])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        f"{missing}:1:1: error[T000]: cannot read: No such file or directory"
    )


@pytest.mark.parametrize(
    "raw",
    [b"a: \x07\n", b"\x00\x01binary", b"\xff\xfe\xfd", b"- a\n- b\n", b"", b"a: [1\n"],
    ids=["control-char", "nul", "not-utf8", "list", "empty", "syntax"],
)
def test_validate_broken_input_has_no_traceback(
    runner: CliRunner, tmp_path: Path, raw: bytes
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_bytes(raw)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{path}:")
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "--bogus", str(GOOD)],
        ["validate"],
        ["nosuchcommand"],
        ["run"],
        ["run", str(GOOD), "--seed", "notanint"],
        [],
    ],
    ids=["unknown-option", "no-spec", "unknown-command", "run-no-spec", "bad-seed", "nothing"],
)
def test_bad_command_line_exits_2(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stdout == "" or "Usage" in result.output


def test_run_invalid_spec_json(runner: CliRunner, bad_spec: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", "--json", "--runs-dir", str(runs), str(bad_spec)])
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["status"] == "invalid"
    assert doc["exit_code"] == 2
    assert doc["name"] == "bad"
    assert [(d["line"], d["col"], d["code"]) for d in doc["diagnostics"]] == [(4, 5, "T010")]
    assert result.stderr.splitlines()[0] == f"{bad_spec}:{BAD_MESSAGE}"
    assert not runs.exists()  # nothing recorded, nothing started


def _python_m_topo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "topo", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env={**__import__("os").environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )


def test_python_m_topo_help() -> None:
    proc = _python_m_topo("--help")
    assert proc.returncode == 0, proc.stderr
    assert "validate" in proc.stdout and "schema" in proc.stdout


def test_python_m_topo_bad_command_line() -> None:
    proc = _python_m_topo("validate", "--bogus", str(GOOD))
    assert proc.returncode == 2
    assert "No such option" in proc.stderr
    assert proc.stdout == ""


def test_python_m_topo_validate_control_characters(tmp_path: Path) -> None:
    path = tmp_path / "ctl.yaml"
    path.write_bytes(b"processes:\n  p: \x07\n")
    proc = _python_m_topo("validate", str(path))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"{path}:")
    assert "error[T001]" in proc.stderr


@pytest.mark.parametrize(
    ("code", "status", "said"), [(None, 0, ""), (3, 3, ""), ("no way", 1, "no way\n")]
)
def test_leaving_runs_atexit_and_flushes_then_exits_with_the_code(
    code: int | str | None, status: int, said: str
) -> None:
    # topo leaves with os._exit (no interpreter teardown): what a normal exit does that
    # matters must still happen, the exit code must be sys.exit's for the same value
    script = (
        "import atexit, sys\n"
        "from topo.console import _leave\n"
        "atexit.register(lambda: sys.stdout.write('atexit ran\\n'))\n"
        "sys.stdout = open(sys.stdout.fileno(), 'w', buffering=1 << 20, closefd=False)\n"
        "sys.stdout.write('buffered')\n"
        f"_leave({code!r})\n"
        "print('not reached')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == status
    assert proc.stdout == "bufferedatexit ran\n"
    assert proc.stderr == said


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="/dev/full")
def test_output_that_cannot_be_written_is_said_and_fails_the_exit() -> None:
    script = (
        "import sys\n"
        "from topo.console import _leave\n"
        "sys.stdout = open(sys.stdout.fileno(), 'w', buffering=1 << 20, closefd=False)\n"
        "sys.stdout.write('a JSON document')\n"
        "_leave(0)\n"
    )
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-c", script], stdout=full, stderr=subprocess.PIPE, text=True,
            timeout=60,
        )  # fmt: skip
    assert proc.returncode == 120
    assert proc.stderr == "topo: error: cannot write the output: No space left on device\n"


def test_the_entry_point_of_older_installs_still_runs_topo() -> None:
    # Their topo script does `from topo.cli import main; sys.exit(main())`.
    script = "import sys\nfrom topo.cli import main\nsys.argv = ['topo', '--version']\nmain()\n"
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("topo ")


def test_graph_prints_mermaid_and_dot(runner: CliRunner) -> None:
    mermaid = runner.invoke(app, ["graph", str(GOOD)])
    assert mermaid.exit_code == 0
    assert mermaid.stdout.startswith("flowchart LR\n")
    assert 'p_worker["worker \u00d74"]' in mermaid.stdout  # x4 as a multiplication sign
    dot = runner.invoke(app, ["graph", str(GOOD), "--format", "dot"])
    assert dot.exit_code == 0
    assert dot.stdout.startswith("digraph")


def test_graph_refuses_an_unknown_format_and_a_bad_spec(runner: CliRunner, bad_spec: Path) -> None:
    assert runner.invoke(app, ["graph", str(GOOD), "--format", "png"]).exit_code == 2
    result = runner.invoke(app, ["graph", str(bad_spec)])
    assert result.exit_code == 2
    assert "error[T0" in result.stderr


def test_graph_renders_an_svg_with_graphviz(runner: CliRunner, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "pipeline.svg"
    result = runner.invoke(app, ["graph", str(GOOD), "-o", str(out)])
    if shutil.which("dot") is None:  # .ci/run installs Graphviz; elsewhere: the hint
        assert result.exit_code == 1 and "apt-get install graphviz" in result.stderr
        return
    assert result.exit_code == 0, result.stderr
    assert "<svg" in out.read_text()


# ----- the error funnel: one message and one exit code per exception -----------------------

INVALID_KEYS = {"name", "status", "exit_code", "diagnostics"}


def assert_error_document(stdout: str, status: str, exit_code: int, message: str) -> None:
    """stdout is the one document of a command that ran nothing, with a message."""
    doc = json.loads(stdout)
    assert set(doc) == INVALID_KEYS | {"message"}, doc
    assert (doc["status"], doc["exit_code"], doc["diagnostics"]) == (status, exit_code, [])
    assert message in doc["message"], doc


def test_every_command_runs_inside_the_error_funnel() -> None:
    from topo.cli import _FUNNELED

    commands = {c.callback for c in app.registered_commands}
    assert commands and commands <= _FUNNELED  # registered with _command, not app.command


def test_run_invalid_sweep_json_has_the_same_shape(
    runner: CliRunner, bad_spec: Path, tmp_path: Path
) -> None:
    # it had no diagnostics (the second shape of the "invalid" document)
    runs = tmp_path / "runs"
    args = ["run", "--json", "--runs-dir", str(runs), "--sweep", "params.x=1,2", str(bad_spec)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert set(doc) == INVALID_KEYS
    assert (doc["name"], doc["status"], doc["exit_code"]) == ("bad", "invalid", 2)
    assert [(d["line"], d["col"], d["code"]) for d in doc["diagnostics"]] == [(4, 5, "T010")]
    assert result.stderr.splitlines()[0] == f"{bad_spec}:{BAD_MESSAGE}"
    assert not runs.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", str(GOOD), "--no-record", "--repeat", "2"], "sweeps are always recorded"),
        (["run", str(GOOD), "--sweep", "params.workers"], "--sweep 'params.workers' is not of"),
        (["run", str(GOOD), "--sweep", "params.a=1", "--sweep", "params.a=2"], "given twice"),
        (["show", "nosuchrun"], "no run under"),
        (["rerun", "last"], "'last': there are no runs under"),
        (["compare", "last", "last~1"], "'last': there are no runs under"),
    ],
    ids=["no-record-sweep", "bad-axis", "axis-twice", "show", "rerun", "compare"],
)
def test_usage_errors_exit_2_with_one_line(
    runner: CliRunner, tmp_path: Path, args: list[str], message: str
) -> None:
    runs = ["--runs-dir", str(tmp_path / "runs")]
    result = runner.invoke(app, [*args, *runs])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("topo: error: ") and message in line, line
    assert result.stdout == ""
    as_json = runner.invoke(app, [*args, *runs, "--json"])  # each of them has --json
    assert as_json.exit_code == 2
    assert_error_document(as_json.stdout, "invalid", 2, message)
    assert json.loads(as_json.stdout)["name"] == ("pipeline" if args[0] == "run" else None)
    assert not (tmp_path / "runs").exists()


def test_graph_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(app, ["graph", str(GOOD), "--format", "png"])
    assert result.exit_code == 2
    assert result.stderr == "topo: error: --format must be mermaid or dot, not 'png'\n"


@pytest.mark.parametrize(
    ("errno_", "where", "reason"),
    [
        (errno.ENOSPC, "write", "No space left on device"),
        (errno.EROFS, "mkdir", "Read-only file system"),
        (errno.EACCES, "mkdir", "Permission denied"),
    ],
)
def test_a_run_record_that_cannot_be_made_exits_2_before_the_start(
    runner: CliRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    errno_: int,
    where: str,
    reason: str,
) -> None:
    """A full disk, a read-only file system, a permission: faked (tests run as root),
    where topo makes the run folder or writes its first file."""
    import topo.api
    from topo import record

    runs = tmp_path / "runs"
    started: list[object] = []
    monkeypatch.setattr(topo.api, "_run", lambda *a: started.append(a))  # must not be reached
    if where == "write":

        def write_atomic(path: Path, text: str) -> None:
            raise OSError(errno_, os.strerror(errno_), str(path))

        monkeypatch.setattr(record, "write_atomic", write_atomic)
    else:
        mkdir = Path.mkdir

        def refuse(self: Path, *args: object, **kwargs: object) -> None:
            if self.is_relative_to(runs):
                raise OSError(errno_, os.strerror(errno_), str(self))
            mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", refuse)
    result = runner.invoke(app, ["run", str(GOOD), "--json", "--runs-dir", str(runs)])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    doing = "write the run record in" if where == "write" else "create run folder"
    assert re.fullmatch(
        rf"topo: error: cannot {doing} {re.escape(str(runs))}/pipeline/[-0-9a-f]+: {reason}", line
    ), line
    assert_error_document(result.stdout, "invalid", 2, reason)
    assert json.loads(result.stdout)["name"] == "pipeline"
    assert started == []
    assert not list(runs.glob("*/*")), "a half record was left"


def test_an_internal_error_is_one_line_and_a_hint(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import topo.api

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(topo.api, "validate", broken)
    result = runner.invoke(app, ["validate", str(GOOD)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "topo: internal error: ZeroDivisionError: division by zero",
        "topo: this is a bug in topo, not in your spec: please report it "
        "(run again with TOPO_DEBUG=1 to see the traceback)",
    ]
    assert "Traceback" not in result.output
    as_json = runner.invoke(app, ["validate", "--json", str(GOOD)])
    assert_error_document(as_json.stdout, "failed", 1, "internal error: ZeroDivisionError")
    debug = runner.invoke(app, ["validate", str(GOOD)], env={"TOPO_DEBUG": "1"})
    assert debug.exit_code == 1
    assert "Traceback (most recent call last):" in debug.stderr
    assert debug.stderr.rstrip().endswith("(run again with TOPO_DEBUG=1 to see the traceback)")


@pytest.mark.parametrize(
    ("raised", "exit_code", "status", "line"),
    [
        (lambda: RunError("the manager process did not start"), 1, "failed", "topo: error: "),
        (KeyboardInterrupt, 130, "interrupted", "topo: interrupted"),
    ],
    ids=["run-error", "ctrl-c"],
)
def test_run_errors_and_ctrl_c(
    runner: CliRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    raised: Callable[[], BaseException],
    exit_code: int,
    status: str,
    line: str,
) -> None:
    import topo.api

    def fails(*args: object, **kwargs: object) -> None:
        raise raised()

    monkeypatch.setattr(topo.api, "run", fails)
    result = runner.invoke(app, ["run", str(GOOD), "--json", "--runs-dir", str(tmp_path)])
    assert result.exit_code == exit_code, result.output
    [said] = result.stderr.splitlines()
    assert said.startswith(line)
    assert json.loads(result.stdout)["status"] == status
    assert json.loads(result.stdout)["exit_code"] == exit_code


def test_live_status_shows_elapsed_time_depths_and_shares() -> None:
    """What a terminal shows while a run goes: each instance's time up and share
    running so far, the run's elapsed time and every queue's depth."""
    import io

    from rich.console import Console

    from topo.console import LiveStatus
    from topo.result import State
    from topo.supervise import InstanceStatus, StatusBoard

    console = Console(file=io.StringIO(), force_terminal=True, width=120, record=True)
    live = LiveStatus(console)
    board = StatusBoard(
        [
            InstanceStatus("producer", 12, State.RUNNING, None, None, 0, 1.2, 3.4, 0.97),
            InstanceStatus(
                "worker[0]",
                13,
                State.RUNNING,
                "blocked in get() on 'tasks'",
                None,
                0,
                0.1,
                3.3,
                0.2,
            ),
        ],
        elapsed_s=3.5,
        depths={"tasks": 4},
    )
    with live:
        live(board)
    text = console.export_text()
    assert "elapsed 3.5 s" in text and "tasks: 4 queued" in text
    assert "97%" in text and "20%" in text and "3.4" in text


@pytest.mark.timeout(60)
def test_run_in_a_pipe_prints_a_plain_summary_without_importing_rich(tmp_path: Path) -> None:
    # stderr is a pipe here: aligned plain columns (for grep and logs), and rich is
    # never imported (part of topo's fixed cost).
    probe = (
        "import runpy, sys; sys.argv = ['topo', 'run', sys.argv[1], '--no-record'];"
        "import atexit; atexit.register(lambda: print('RICH' if 'rich' in sys.modules else "
        "'NO RICH', file=sys.stderr)); runpy.run_module('topo', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(GOOD)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "pipeline: ok" in lines
    header = lines[lines.index("pipeline: ok") + 1]
    assert header.split() == ["instance", "state", "exit", "restarts", "seconds", "result"]
    producer = next(line for line in lines if re.match(r"producer +exited", line))
    assert producer.split()[:3] == ["producer", "exited", "0"]
    assert producer.index("exited") == header.index("state")  # aligned columns
    assert not any(c in done.stderr for c in "┃│━")
    assert lines[-1] == "NO RICH"


def test_version(runner: CliRunner) -> None:
    import topo

    for flag in ("--version", "-V"):
        result = runner.invoke(app, [flag])
        assert result.exit_code == 0
        assert result.output.startswith(f"topo {topo.__version__} (Python ")


def test_help_names_values_in_words(runner: CliRunner) -> None:
    for command in ("run", "validate", "runs", "show", "rerun", "graph", "init", "report"):
        text = runner.invoke(app, [command, "--help"]).output
        assert "<list" not in text and "<int" not in text and "<str>" not in text, command
    run_help = runner.invoke(app, ["run", "--help"]).output
    for shown in ("--set KEY=VALUE", "--seed N", "--runs-dir PATH", "--sweep KEY=V1,V2,..."):
        assert shown in run_help


def test_shell_completion_is_typer_s(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without this, typer takes the shell from the process tree and ignores "bash": the
    # test failed when pytest's parent was no shell (a command started in the background).
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    result = runner.invoke(app, ["--show-completion", "bash"])
    assert result.exit_code == 0
    assert "_topo_completion" in result.output and "complete " in result.output


@pytest.mark.timeout(60)
def test_init_writes_a_starter_that_runs(tmp_path: Path) -> None:
    folder = tmp_path / "new"
    topo_cli = [sys.executable, "-m", "topo"]
    done = subprocess.run([*topo_cli, "init", str(folder)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    spec = folder / "starter.yaml"
    assert spec.read_text().startswith("# A topo spec")  # commented
    assert "def produce(" in (folder / "starter.py").read_text()
    ran = subprocess.run(
        [*topo_cli, "run", str(spec), "--json", "-q", "--runs-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    doc = json.loads(ran.stdout)
    assert doc["processes"]["collector"]["result"] == sum(i * i for i in range(100))
    again = subprocess.run([*topo_cli, "init", str(folder)], capture_output=True, text=True)
    assert again.returncode == 2  # overwrites nothing
    assert "already exist: topo init overwrites nothing" in again.stderr
    named = subprocess.run(
        [*topo_cli, "init", str(folder), "--name", "my_lab"], capture_output=True, text=True
    )
    assert named.returncode == 0 and (folder / "my_lab.yaml").exists()
    assert "target: my_lab:produce" in (folder / "my_lab.yaml").read_text()


class _Console:
    def __init__(self, terminal: bool) -> None:
        self.is_terminal = terminal
        self.lines: list[str] = []

    def print(self, obj: object = "", **_: object) -> None:
        self.lines.extend(str(getattr(obj, "plain", obj)).splitlines())


def test_tables_keep_every_value_whole_and_fall_back_to_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from topo.console import print_table as _print_table

    headers = ["run", "params", "collector.items_per_s"]
    rows = [["1", "params.workers=1 params.items=100000", "123456.789012"]]
    piped = _Console(terminal=False)  # a pipe: as wide as it is, aligned, nothing cut
    _print_table(piped, headers, rows)
    assert piped.lines[1].split("  ")[-1].strip() == "123456.789012"
    assert piped.lines[0].startswith("run  params")
    monkeypatch.setenv("COLUMNS", "40")  # a narrow terminal: one record per line
    narrow = _Console(terminal=True)
    _print_table(narrow, headers, rows, styles=[None])
    assert narrow.lines == [
        "run: 1  params: params.workers=1 params.items=100000  collector.items_per_s: 123456.789012"
    ]
    monkeypatch.setenv("COLUMNS", "200")
    wide = _Console(terminal=True)
    _print_table(wide, headers, rows, styles=[None])
    assert len(wide.lines) == 2 and wide.lines[1].endswith("123456.789012")


# ----- a command line parsed once -----------------------------------------------------------

SAYS_SIZE = """\
topo: 1
name: sizes
params: {size: 3}
processes:
  p:
    target: sizes:size
    args: {n: "${params.size}"}
"""


def _entry_main(folder: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], bool]:
    """``topo ARGS`` through the entry point, in ``folder`` with its own cache:
    (the process, whether it imported typer)."""
    script = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write(f'typer: {\"typer\" in sys.modules}\\n'))\n"
        f"sys.argv = ['topo', *{list(args)!r}]\n"
        "from topo.entry import main\n"
        "main()\n"
    )
    env = {**os.environ, "TOPO_CACHE_DIR": str(folder / "cache"), "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc, "typer: True" in proc.stderr


def _result_of(proc: subprocess.CompletedProcess[str]) -> object:
    return json.loads(proc.stdout)["processes"]["p"]["result"]


@pytest.fixture
def sizes(
    tmp_path: Path, write_spec: Callable[..., Path], write_module: Callable[..., Path]
) -> Path:
    write_module(tmp_path, "sizes", "def size(n):\n    return n\n")
    return write_spec(tmp_path, SAYS_SIZE)


def test_a_run_command_line_parsed_once_runs_again_without_typer(sizes: Path) -> None:
    args = ("run", "--no-record", "--json", "-q", "--set", "params.size=5", sizes.name)
    first, typer_first = _entry_main(sizes.parent, *args)
    again, typer_again = _entry_main(sizes.parent, *args)
    assert first.returncode == again.returncode == 0, again.stderr
    assert typer_first and not typer_again
    assert _result_of(first) == _result_of(again) == 5
    other, typer_other = _entry_main(sizes.parent, *args[:-2], "params.size=7", sizes.name)
    assert typer_other and _result_of(other) == 7  # another command line: typer parses it


def test_a_remembered_command_line_still_reads_and_checks_the_spec(sizes: Path) -> None:
    args = ("run", "--no-record", "--json", sizes.name)
    assert _entry_main(sizes.parent, *args)[0].returncode == 0
    sizes.write_text(SAYS_SIZE.replace("args:", "argz:"), encoding="utf-8")
    proc, typer_imported = _entry_main(sizes.parent, *args)
    assert not typer_imported
    assert proc.returncode == 2
    assert "spec.yaml:7:5: error[T010]: unknown key 'argz'" in proc.stderr
    assert json.loads(proc.stdout)["status"] == "invalid"


def test_a_damaged_remembered_command_line_is_parsed_again(sizes: Path) -> None:
    args = ("run", "--no-record", "--json", sizes.name)
    assert _entry_main(sizes.parent, *args)[0].returncode == 0
    entries = list((sizes.parent / "cache" / "commands").glob("*.json"))
    assert len(entries) == 1
    for damage in ['{"spec": {"path": "other.yaml"}}', "[1, 2]", "{not json"]:
        entries[0].write_text(damage, encoding="utf-8")
        proc, typer_imported = _entry_main(sizes.parent, *args)
        assert proc.returncode == 0, proc.stderr
        assert typer_imported and _result_of(proc) == 3


def test_topo_text_of_several_lines_is_prefixed_line_by_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The supervisor says the starts of one step in one call (one write, not one each).
    import io

    from rich.console import Console

    from topo.console import Printer

    printer = Printer()
    assert printer.plain  # stderr is not a terminal here
    printer("", "a running (pid 1)\nb running (pid 2)")
    printer("w[0]", "hello")
    assert capsys.readouterr().err == (
        "topo: a running (pid 1)\ntopo: b running (pid 2)\nw[0] | hello\n"
    )
    printer.plain = False  # a terminal: rich draws the lines
    printer.console = Console(file=io.StringIO(), width=80, color_system=None)
    printer("", "a exited (0)\nb exited (0)")
    assert printer.console.file.getvalue() == "topo: a exited (0)\ntopo: b exited (0)\n"
