"""The real CLI on specs that must not start anything, and on a run whose target raises.

An invalid spec ends with exit code 2, a located diagnostic on stderr, a JSON document
with status "invalid" on stdout, no traceback, and no process started (each target
would create a marker file when called). So does a --runs-dir where no run folder can
be made, with one line saying which folder and why. A target that raises fails the run
(exit 1): its traceback is shown under its instance's name, the other instances are
stopped, and what finished before is kept; so does a record lost while the run goes on.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import TopoRun

REPO = Path(__file__).resolve().parents[2]

TARGETS = """\
import shutil
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


def loud(lines):
    for i in range(lines):
        print(f"line {i} " + "x" * 100, flush=True)
    return lines


def vanish(ctx):
    shutil.rmtree(ctx.run_dir)  # the run's record, from under topo's feet
    print("the record is gone", flush=True)
    return "gone"
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
    assert run.returncode == 2 and run.doc is not None, str(run)
    # each at the key that names it, with the target's signature
    lines = spec.read_text().splitlines()
    extra, out = lines[9].index("extra") + 1, lines[10].index("{out") + 2
    assert [(d["code"], d["line"], d["col"]) for d in run.doc["diagnostics"]] == [
        ("T041", 10, extra),
        ("T041", 11, out),
    ]
    assert (
        f"{spec}:10:{extra}: error[T041]: e2e_targets:takes_nothing takes no parameter 'extra': "
        "it is takes_nothing(marker), and calling it for 'p' would fail" in run.stderr
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


# ----- a --runs-dir where no record can be made ----------------------------------------------


def assert_cannot_record(run: TopoRun, name: str, folder: str, runs_dir: str, reason: str) -> None:
    """Exit 2, one line on stderr naming the folder and the reason, the "invalid"
    document with that message on stdout, and nothing started."""
    assert run.returncode == 2, str(run)
    assert "Traceback" not in run.stderr, str(run)
    [line] = run.stderr.splitlines()  # nothing else: no instance started, no status line
    pattern = rf"topo: error: cannot create {folder} {re.escape(runs_dir)}/{name}/[-\w]+: {reason}"
    assert re.fullmatch(pattern, line), str(run)
    assert run.doc == {
        "name": name,
        "status": "invalid",
        "exit_code": 2,
        "diagnostics": [],
        "message": line.removeprefix("topo: error: "),
    }, str(run)


@pytest.mark.timeout(60)
def test_runs_dir_under_proc(run_topo: Callable[..., TopoRun]) -> None:
    # This ended in a FileNotFoundError traceback.
    spec = str(REPO / "specs" / "event.yaml")
    run = run_topo("run", spec, "--runs-dir", "/proc/nope")
    assert run.returncode == 2, str(run)
    assert run.stdout == ""
    line = (
        r"topo: error: cannot create run folder /proc/nope/event/[-\w]+: No such file or directory"
    )
    assert re.fullmatch(line + "\n", run.stderr), str(run)
    run = run_topo("run", spec, "--json", "--runs-dir", "/proc/nope")
    assert_cannot_record(run, "event", "run folder", "/proc/nope", "No such file or directory")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("runs_dir", "reason", "sweep"),
    [
        ("FILE", "Not a directory", False),
        ("FILE/below", "Not a directory", False),
        ("/proc/self/nope", "No such file or directory", False),
        ("/sys/nope", "(Operation not permitted|Permission denied|Read-only file system)", False),
        ("FILE", "Not a directory", True),
    ],
    ids=["a-file", "under-a-file", "under-proc", "under-sys", "sweep-in-a-file"],
)
def test_runs_dir_where_no_folder_can_be_made(
    run_topo: Callable[..., TopoRun], folder: Path, runs_dir: str, reason: str, sweep: bool
) -> None:
    # (Tests run as root, for whom no chmod makes a folder unwritable: these paths are.)
    (folder / "a-file").write_text("not a folder")
    runs_dir = runs_dir.replace("FILE", str(folder / "a-file"))
    spec = write(
        folder,
        """\
        params: {n: 1}
        processes:
          p:
            target: e2e_targets:touch
            args: {marker: MARKER}
        """,
        name="quick.yaml",
    )
    axes = ["--sweep", "params.n=1,2"] if sweep else []
    run = run_topo("run", "--json", "--runs-dir", runs_dir, *axes, str(spec))
    what = "sweep folder" if sweep else "run folder"
    assert_cannot_record(run, "quick", what, runs_dir, reason)
    assert not (folder / "marker").exists(), "a target ran"


@pytest.mark.timeout(60)
def test_runs_dir_with_missing_parents_is_created(
    run_topo: Callable[..., TopoRun], folder: Path
) -> None:
    spec = write(
        folder,
        """\
        processes:
          p:
            target: e2e_targets:touch
            args: {marker: MARKER}
        """,
        name="quick.yaml",
    )
    runs = folder / "not" / "yet" / "there"
    doc = run_topo("run", "--json", "-q", "--runs-dir", str(runs), str(spec)).ok()
    assert Path(doc["run_dir"]).parent == runs / "quick"
    assert (Path(doc["run_dir"]) / "run.json").is_file()


@pytest.mark.timeout(60)
def test_a_record_lost_during_the_run_fails_it(
    run_topo: Callable[..., TopoRun], folder: Path
) -> None:
    spec = write(
        folder,
        """\
        processes:
          v:
            target: e2e_targets:vanish
        """,
        name="lost.yaml",
    )
    run = run_topo("run", "--json", "--runs-dir", str(folder / "runs"), str(spec))
    assert run.returncode == 1, str(run)
    assert "Traceback" not in run.stderr, str(run)
    doc = run.doc
    assert doc is not None, str(run)
    assert (doc["status"], doc["exit_code"]) == ("failed", 1)
    assert doc["processes"]["v"]["result"] == "gone"  # what the instance did is kept
    run_dir = doc["run_dir"]
    assert doc["message"] == (
        f"the logs and events in {run_dir} could not be written: No such file or directory; "
        f"{run_dir}/trace.json could not be written: No such file or directory; "
        f"{run_dir}/run.json could not be written: No such file or directory"
    )
    assert "v | the record is gone" in run.stderr.splitlines()
    assert f"topo: the run's record in {run_dir} is incomplete" in run.stderr.splitlines()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["../../escaped", "/tmp/topo-escaped", "..", "x" * 300, "a\0b"])
def test_a_name_that_would_leave_the_runs_folder(
    run_topo: Callable[..., TopoRun], folder: Path, name: str
) -> None:
    quoted = name.replace("\0", "\\0")
    spec = write(
        folder,
        f"""\
        name: "{quoted}"
        processes:
          a: {{target: e2e_targets:touch, args: {{marker: MARKER}}}}
        """,
    )
    run = run_invalid(run_topo, spec)
    assert run.returncode == 2, str(run)
    assert [d["code"] for d in run.doc["diagnostics"]] == ["T011"], str(run)
    assert "cannot name a run folder" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (folder / "marker").exists()
    assert not (folder / "runs").exists() and not (folder.parent / "escaped").exists()
    assert not Path("/tmp/topo-escaped").exists()


def _doubling(levels: int) -> str:
    lines = ["params:", "  p0: ab"]
    lines += [f'  p{i}: "${{params.p{i - 1}}}${{params.p{i - 1}}}"' for i in range(1, levels + 1)]
    lines += [
        "processes:",
        f"  a: {{target: e2e_targets:touch, args: {{x: '${{params.p{levels}}}'}}}}",
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("text", "sets", "code", "message"),
    [
        (
            "processes:\n  a: {target: e2e_targets:touch, replicas: 1000000000}\n",
            (),
            "T011",
            "1,000,000,000 instances in all are more than the 10,000 a run may have",
        ),
        (
            "processes:\n  a: {target: e2e_targets:touch}\n",
            ("--set", "processes.a.replicas=2000000000"),
            "T011",
            "2,000,000,000 instances in all are more than the 10,000 a run may have",
        ),
        (_doubling(40), (), "T020", "grows to 1,048,576 characters, more than the 1,000,000"),
    ],
    ids=["replicas", "replicas_by_set", "doubling"],
)
def test_validation_stays_cheap_whatever_the_input(
    run_topo: Callable[..., TopoRun],
    folder: Path,
    text: str,
    sets: tuple[str, ...],
    code: str,
    message: str,
) -> None:
    spec = folder / "spec.yaml"
    spec.write_text(text)
    run = run_topo("validate", str(spec), *sets)
    assert run.returncode == 2, str(run)
    assert f"error[{code}]" in run.stderr and message in run.stderr, str(run)
    assert "Traceback" not in run.stderr
    assert run.elapsed_s < 10, f"{run.elapsed_s:.1f} s"  # was minutes, or never


@pytest.mark.timeout(60)
def test_a_huge_environment_variable_doubled_is_refused(
    run_topo: Callable[..., TopoRun], folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOPO_TEST_BIG", "x" * 130_000)
    lines = ["params:", "  p0: ${env.TOPO_TEST_BIG}"]
    lines += [f'  p{i}: "${{params.p{i - 1}}}${{params.p{i - 1}}}"' for i in range(1, 30)]
    lines += ["processes:", "  a: {target: e2e_targets:touch, args: {x: '${params.p29}'}}"]
    spec = folder / "spec.yaml"
    spec.write_text("\n".join(lines) + "\n")
    run = run_topo("validate", str(spec))
    assert run.returncode == 2, str(run)
    assert "error[T020]" in run.stderr and "MemoryError" not in run.stderr, str(run)
    assert run.elapsed_s < 10


@pytest.mark.timeout(60)
def test_the_instance_limit_can_be_raised(
    run_topo: Callable[..., TopoRun], folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = folder / "spec.yaml"
    spec.write_text(
        "processes:\n  a: {target: e2e_targets:touch, args: {marker: m}, replicas: 30, "
        "ignore: [T123]}\n"
    )
    monkeypatch.setenv("TOPO_MAX_INSTANCES", "20")
    assert run_topo("validate", str(spec)).returncode == 2
    monkeypatch.setenv("TOPO_MAX_INSTANCES", "30")
    assert run_topo("validate", str(spec)).returncode == 0


HUGE_ARRAY = """\
channels:
  image: {kind: ndarray, shape: [1000000, 1000000], dtype: float64}
processes:
  a: {target: e2e_targets:touch, args: {marker: MARKER}, uses: {image: image}}
"""


@pytest.mark.timeout(60)
def test_an_array_larger_than_shared_memory_is_refused(
    run_topo: Callable[..., TopoRun], folder: Path
) -> None:
    spec = write(folder, HUGE_ARRAY)
    checked = run_topo("validate", str(spec))
    assert checked.returncode == 0, str(checked)  # a warning: another machine may hold it
    assert "warning[T124]: the shared-memory channels need 8000.0 GB" in checked.stderr
    run = run_topo("run", "--json", "--runs-dir", str(folder / "runs"), str(spec))
    assert run.returncode == 1, str(run)  # was SIGBUS (135), without a word
    assert run.doc["status"] == "failed"
    assert run.doc["message"].startswith(
        "the shared-memory channels need 8,000,000,000,000 bytes ('image': 8,000,000,000,000)"
    )
    assert "Traceback" not in run.stderr
    assert not (folder / "marker").exists()


def _run_with_fd_limit(folder: Path, soft: int, hard: int, *args: str) -> Any:
    import resource
    import subprocess
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.run(
        [sys.executable, "-m", "topo", *args],
        preexec_fn=limit,
        capture_output=True,
        text=True,
        timeout=45,
        cwd=folder,
    )


MANY = """\
start_method: fork
processes:
  a: {target: e2e_targets:quick, replicas: 60, ignore: [T123]}
"""


@pytest.mark.timeout(60)
def test_many_instances_under_a_low_soft_fd_limit_run(folder: Path) -> None:
    spec = write(folder, MANY)
    done = _run_with_fd_limit(folder, 64, 4096, "run", "--json", "--no-record", str(spec))
    assert done.returncode == 0, done.stderr  # the soft limit is raised as far as allowed
    assert "Traceback" not in done.stderr


@pytest.mark.timeout(60)
def test_more_instances_than_the_fd_limit_allows_are_refused(folder: Path) -> None:
    spec = write(folder, MANY)
    done = _run_with_fd_limit(folder, 64, 64, "run", "--json", "--no-record", str(spec))
    assert done.returncode == 1, done.stderr
    assert "this run needs about 364 file descriptors at once" in done.stderr
    assert "ulimit -n 364" in done.stderr
    assert "Traceback" not in done.stderr and "EMFILE" not in done.stderr


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB file system, to run out of space for real (tests run as root)."""
    import subprocess

    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)])
    assert made.returncode == 0, "mounting a small tmpfs needs root (tests run as root)"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)])


@pytest.mark.timeout(60)
def test_a_full_disk_during_the_run_ends_it_with_a_verdict(
    run_topo: Callable[..., TopoRun], folder: Path, full_disk: Path
) -> None:
    spec = write(folder, "processes:\n  loud: {target: e2e_targets:loud, args: {lines: 5000}}\n")
    run = run_topo("run", "--json", "--runs-dir", str(full_disk), str(spec))
    assert run.returncode == 1, str(run)  # was: waiting for ever
    assert "Traceback" not in run.stderr, str(run)
    doc = run.doc
    assert doc is not None, str(run)
    assert doc["processes"]["loud"]["result"] == 5000  # the instance ran to its end
    assert "could not be written: No space left on device" in doc["message"]
    assert "loud | line 4999 " + "x" * 100 in run.stderr  # output kept flowing
    assert f"topo: the run's record in {doc['run_dir']} is incomplete" in run.stderr
    assert run.elapsed_s < 30
