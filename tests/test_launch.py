"""The start of an instance, interrupted at its most delicate moment.

A signal that reaches topo while it starts an instance (between ``Process.start()`` and
the supervisor tracking the new process) used to leave that process untracked: it was
never stopped nor joined, the run called it "not started", topo's exit waited for it in
multiprocessing's atexit join, and teardown unlinked its semaphores while the child could
still be unpickling them (``FileNotFoundError`` in ``SemLock._rebuild``, then the resource
tracker's warnings; issue 10).

Each case runs topo in a process of its own, so that what its resource tracker and fork
server print at the end is seen too.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import topo
from topo.backends.local import launcher as launcher_module
from topo.backends.local.launcher import LocalLauncher
from topo.resolve import Plan
from topo.result import EXIT_SIGTERM
from topo.supervise import Exited, Returned, RunOptions

SPEC = """\
locks:
  gate: lock
  slots: {kind: bounded_semaphore, value: 2}
channels:
  q: {kind: queue, maxsize: 4}
processes:
  sleeper:
    target: naps:nap
    replicas: 2
    uses: {gate: gate, slots: slots, q: q}
"""

TARGETS = """\
import time


def nap(gate, slots, q):
    with slots:
        time.sleep(30)
"""

# Runs topo.run on the spec with a SIGTERM delivered to topo right after it has started
# sleeper[0]'s process, inside the supervisor's start of that instance; prints the
# result and the processes still alive once run() has returned.
DRIVER = """\
import json, os, signal, sys
import topo
from topo import supervise
from topo.backends.local import launcher, output, procfs

supervise.START_BATCH = int(sys.argv[3])  # instances started together
real_add = output.OutputPump.add
real_start = launcher.BaseProcess.start

def add_then_signal(self, name, conn):
    real_add(self, name, conn)
    if name == "sleeper[0]" and sys.argv[4] == "signal":
        # raise_signal: delivered to this thread, its handler runs before this returns
        signal.raise_signal(signal.SIGTERM)

def second_start_fails(self):
    if self.name == "sleeper[1]":
        raise OSError(11, "Resource temporarily unavailable")  # fork's EAGAIN
    real_start(self)

real_fork_all = launcher.LocalLauncher._fork_all
real_fork = os.fork

def second_fork_fails(self, batch, started):  # where topo forks instances itself
    forks = []

    def fork():
        if [p.instance.name for p in batch][len(forks)] == "sleeper[1]":
            raise OSError(11, "Resource temporarily unavailable")
        forks.append(None)
        return real_fork()

    os.fork = fork
    try:
        real_fork_all(self, batch, started)
    finally:
        os.fork = real_fork

output.OutputPump.add = add_then_signal
if sys.argv[5:] == ["multiprocessing"]:  # its Process.start() forks, as without pidfds
    launcher._pidfds_work = lambda: False
if sys.argv[4] == "fail":
    launcher.BaseProcess.start = second_start_fails
    launcher.LocalLauncher._fork_all = second_fork_fails
result = topo.run(sys.argv[1], {"start_method": sys.argv[2]}, record=False)
# Every child still there, from /proc: topo keeps its instances out of
# multiprocessing.active_children() (it reaps them itself).
helpers = launcher._multiprocessing_helpers()
left = {p: s for p, s in procfs.children_of(os.getpid()).items() if p not in helpers}
print(json.dumps({"result": result.to_json(), "left": [f"{p} ({s})" for p, s in left.items()]}))
for p in left:  # without this, the exit below would wait for them
    os.kill(p, signal.SIGKILL)
"""

# What the run must not print: see TEARDOWN_NOISE in tests/e2e/conftest.py.
NOISE = ("resource_tracker:", "Exception ignored in", "FileNotFoundError")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("start_method", ["spawn", "forkserver", "fork"])
def test_a_signal_while_an_instance_starts_stops_it_like_the_others(
    tmp_path: Path, start_method: str
) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC)
    (tmp_path / "naps.py").write_text(TARGETS)
    # One at a time: the signal is acted on before sleeper[1] starts.
    doc, stderr = _drive(tmp_path, start_method, batch=1, then="signal")
    assert doc["status"] == "interrupted", stderr
    assert doc["exit_code"] == EXIT_SIGTERM
    _assert_started_and_stopped(doc, "sleeper[0]")
    assert doc["processes"]["sleeper[1]"]["state"] == "not started"
    # In one batch: both started before the signal was acted on, both stopped.
    doc, stderr = _drive(tmp_path, start_method, batch=32, then="signal")
    _assert_started_and_stopped(doc, "sleeper[0]")
    _assert_started_and_stopped(doc, "sleeper[1]")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("start_method", ["spawn", "fork", "fork by multiprocessing"])
def test_a_start_failing_in_the_middle_of_a_batch_stops_those_started(
    tmp_path: Path, start_method: str
) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC)
    (tmp_path / "naps.py").write_text(TARGETS)
    doc, stderr = _drive(tmp_path, start_method, batch=32, then="fail")
    assert doc["status"] == "failed", stderr
    assert "Resource temporarily unavailable" in doc["message"], doc["message"]
    _assert_started_and_stopped(doc, "sleeper[0]")
    assert doc["processes"]["sleeper[1]"]["state"] == "not started"


def _assert_started_and_stopped(doc: dict, name: str) -> None:
    one = doc["processes"][name]
    assert one["pid"], f"{name} was started: its pid belongs to the run\n{one}"
    assert (one["state"], one["exit_code"]) == ("stopped", -signal.SIGTERM), one


def _drive(tmp_path: Path, start_method: str, batch: int, then: str) -> tuple[dict, str]:
    """Run DRIVER; the run's result, after checking nothing was left and nothing noisy
    was printed."""
    method, _, by = start_method.partition(" by ")
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path / "spec.yaml"), method, str(batch), then, by],
        capture_output=True,
        text=True,
        timeout=45,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    doc, left = out["result"], out["left"]
    assert left == [], f"processes topo started and left running: {left}\n{done.stderr}"
    noise = [line for line in done.stderr.splitlines() if any(n in line for n in NOISE)]
    assert noise == [], done.stderr
    return doc, done.stderr


# Runs topo.run twice under forkserver, the second time with a fork server of the
# caller's own already running; prints whether a fork server runs after each run.
FORKSERVER_DRIVER = """\
import json, os, sys
from multiprocessing import forkserver
import topo

def forkserver_pid():
    return forkserver._forkserver._forkserver_pid

topo.run(sys.argv[1], {"start_method": "forkserver"}, record=False)
after_own = forkserver_pid()
forkserver.ensure_running()
users = forkserver_pid()
topo.run(sys.argv[1], {"start_method": "forkserver"}, record=False)
print(json.dumps({"after_own": after_own, "users": users, "after_users": forkserver_pid()}))
"""


@pytest.mark.timeout(60)
def test_a_fork_server_started_for_a_run_is_stopped_with_it(tmp_path: Path) -> None:
    """topo starts the fork server with SIGINT and SIGTERM blocked (see _start_helpers):
    kept after the run, it would hand that mask to every process the caller forks from
    it later. One the caller started itself is left running."""
    (tmp_path / "spec.yaml").write_text(
        "processes:\n  sleeper:\n    target: naps:answer\n    replicas: 2\n"
    )
    (tmp_path / "naps.py").write_text("def answer():\n    return 42\n")
    done = subprocess.run(
        [sys.executable, "-c", FORKSERVER_DRIVER, str(tmp_path / "spec.yaml")],
        capture_output=True,
        text=True,
        timeout=45,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["after_own"] is None, out
    assert out["users"] is not None and out["after_users"] == out["users"], out


@pytest.fixture(params=["topo", "multiprocessing"])
def forked_by(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Who forks the instances under fork: topo itself (with pidfds), or
    multiprocessing's ``Process.start()`` (where there are none)."""
    if request.param == "multiprocessing":
        monkeypatch.setattr(launcher_module, "_pidfds_work", lambda: False)
    return str(request.param)


@pytest.mark.timeout(60)
def test_instances_forked_in_one_batch_keep_their_own_exit_pipes(
    tmp_path: Path, forked_by: str
) -> None:
    # Each child of a batch closes the pipes of the others; it once closed numbers that
    # multiprocessing's exit pipe of its own had taken again: its sentinel read as ended
    # while it ran, and topo spun at 100% CPU.
    import multiprocessing.connection

    (tmp_path / "spec.yaml").write_text(
        "start_method: fork\nprocesses:\n  nap: {target: naps:short, replicas: 4}\n"
    )
    (tmp_path / "naps.py").write_text("import time\n\n\ndef short():\n    time.sleep(2)\n")
    with _opened_launcher(tmp_path / "spec.yaml") as (launcher, plan):
        pids = launcher.start_many([(instance, 0) for instance in plan.instances])
        assert len(pids) == 4
        sentinels = [h.process.sentinel for h in launcher.handles.values()]
        assert multiprocessing.connection.wait(sentinels, 0.5) == []  # all still asleep


@contextlib.contextmanager
def _opened_launcher(spec: Path) -> Iterator[tuple[LocalLauncher, Plan]]:
    """A local launcher open for ``spec``'s plan; its instances killed, reaped, closed."""
    plan = topo.load(spec)
    launcher = LocalLauncher(plan, RunOptions(watch=False))
    launcher.open(lambda name, line: None)
    try:
        yield launcher, plan
    finally:
        for name in list(launcher.handles):
            launcher.kill(name)
        while launcher.handles:
            launcher.wait(0.1)
        launcher.close()


def _events(launcher: LocalLauncher, kind: type, count: int) -> list[Any]:
    """Every event the launcher reports until ``count`` of type ``kind`` (20 s at most)."""
    seen: list[Any] = []
    for _ in range(200):
        seen += launcher.wait(0.1)
        if sum(isinstance(e, kind) for e in seen) >= count:
            break
    return seen


NAPS = """\
import time


def brief():
    time.sleep(0.3)


def long():
    time.sleep(30)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_each_end_is_seen_and_the_running_stay_watched(tmp_path: Path, start_method: str) -> None:
    # The launcher watches each instance's report and end in one selector from its start
    # to its reaping (a pidfd under spawn and fork, the fork server's socket under
    # forkserver); once, a sweep meant for sentinel pipes unwatched every running
    # instance's end at the first wait(), and their ends were then seen 0.1 s late.
    (tmp_path / "spec.yaml").write_text(
        f"start_method: {start_method}\nprocesses:\n"
        "  quick: {target: naps:brief, replicas: 2}\n  slow: {target: naps:long}\n"
    )
    (tmp_path / "naps.py").write_text(NAPS)
    with _opened_launcher(tmp_path / "spec.yaml") as (launcher, plan):
        launcher.start_many([(instance, 0) for instance in plan.instances])
        assert launcher.handles["slow"].pidfd is (start_method != "forkserver")
        ended = [e.name for e in _events(launcher, Exited, 2) if isinstance(e, Exited)]
        assert sorted(ended) == ["quick[0]", "quick[1]"]
        watched = {key.data for key in launcher.ready.get_map().values()}
        assert watched == {("slow", True), ("slow", False)}


PARENTAGE = """\
import multiprocessing
import os
import time


def parent():
    watched = multiprocessing.parent_process()
    return [watched.pid, watched.is_alive(), os.getppid()]


def nap(marks):
    open(os.path.join(marks, str(os.getpid())), "w").close()
    time.sleep(30)
"""


def _pipes_of(pid: int) -> dict[int, set[str]]:
    """The pipes ``pid`` holds open: inode -> how ("r", "w")."""
    held: dict[int, set[str]] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("pipe:["):
                flags = Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0]
                held.setdefault(int(link[6:-1]), set()).add("w" if int(flags, 8) & 3 else "r")
    return held


@pytest.mark.timeout(60)
@pytest.mark.skipif(not Path("/proc/self/fdinfo").is_dir(), reason="reads /proc")
def test_a_forked_instance_keeps_only_its_own_ends_of_topos_pipes(
    tmp_path: Path, forked_by: str
) -> None:
    # Under fork every instance inherits every descriptor open in topo: the pipes of the
    # others in its batch too. Holding another's writing end, it would hide that one's
    # end of output; holding the shared pipe's writing end (see LocalLauncher.open), it
    # would keep its siblings' parent_process() alive after topo is gone.
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "spec.yaml").write_text(
        "start_method: fork\nprocesses:\n"
        f"  nap: {{target: parentage:nap, replicas: 4, args: {{marks: '{marks}'}}}}\n"
    )
    (tmp_path / "parentage.py").write_text(PARENTAGE)
    with _opened_launcher(tmp_path / "spec.yaml") as (launcher, plan):
        assert (launcher.parent_alive is not None) == (forked_by == "topo")
        launcher.start_many([(instance, 0) for instance in plan.instances])
        pids = {h.process.pid for h in launcher.handles.values()}
        for _ in range(100):  # each has closed what it closes once its target runs
            if {int(m.name) for m in marks.iterdir()} == pids:
                break
            time.sleep(0.1)
        reports = {os.fstat(h.report.fileno()).st_ino: n for n, h in launcher.handles.items()}
        for name, handle in launcher.handles.items():
            held = _pipes_of(handle.process.pid)  # type: ignore[arg-type]
            writing = {reports[i] for i, how in held.items() if i in reports and "w" in how}
            assert writing == {name}  # its own, of the report pipes
            if launcher.parent_alive is not None:
                assert held[os.fstat(launcher.parent_alive[0]).st_ino] == {"r"}


# To its stdout's descriptor: pytest's own sys.stdout, inherited under fork, is not it.
TALK = """\
import os


def talk():
    os.write(1, b"hello\\n")
"""


def _talking(tmp_path: Path, replicas: int) -> tuple[LocalLauncher, Plan, list[tuple[str, str]]]:
    """An open launcher for ``replicas`` instances that each print one line, and the
    lines its output sink has received."""
    (tmp_path / "spec.yaml").write_text(
        f"start_method: fork\nprocesses:\n  talk: {{target: talk:talk, replicas: {replicas}}}\n"
    )
    (tmp_path / "talk.py").write_text(TALK)
    plan = topo.load(tmp_path / "spec.yaml")
    launcher = LocalLauncher(plan, RunOptions(watch=False))
    lines: list[tuple[str, str]] = []
    launcher.open(lambda name, line: lines.append((name, line)))
    return launcher, plan, lines


@pytest.mark.timeout(60)
def test_no_output_thread_runs_while_the_first_instances_fork(tmp_path: Path) -> None:
    # A forked child cleans up after every other thread of its parent (each a few pages
    # of topo's memory copied): the output pump starts at the first wait(), after the
    # first starts, and what the instances printed meanwhile reaches the sink then.
    launcher, plan, lines = _talking(tmp_path, 3)
    assert launcher.pump is not None
    try:
        launcher.start_many([(instance, 0) for instance in plan.instances])
        assert not launcher.pump.is_alive()
        assert len(_events(launcher, Exited, 3)) >= 3
        assert launcher.pump.is_alive()
    finally:
        while launcher.handles:
            launcher.wait(0.1)
        launcher.close()
    assert sorted(lines) == [(f"talk[{i}]", "hello") for i in range(3)]


@pytest.mark.timeout(60)
def test_what_is_printed_before_any_wait_is_kept(tmp_path: Path) -> None:
    # A run that ends before its first wait() (a start failing) still hands on what its
    # instances printed: close() starts the pump to read it.
    launcher, plan, lines = _talking(tmp_path, 1)
    try:
        (pid,) = launcher.start_many([(plan.instances[0], 0)])
        assert pid is not None
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # it has printed and ended
    finally:
        launcher.close()
    assert lines == [("talk", "hello")]


@pytest.mark.timeout(60)
def test_a_forked_instance_sees_topo_as_its_living_parent(tmp_path: Path, forked_by: str) -> None:
    (tmp_path / "spec.yaml").write_text(
        "start_method: fork\nprocesses:\n  child: {target: parentage:parent, replicas: 2}\n"
    )
    (tmp_path / "parentage.py").write_text(PARENTAGE)
    with _opened_launcher(tmp_path / "spec.yaml") as (launcher, plan):
        launcher.start_many([(instance, 0) for instance in plan.instances])
        returned = [e.value for e in _events(launcher, Returned, 2) if isinstance(e, Returned)]
    assert returned == [[os.getpid(), True, os.getpid()]] * 2


@pytest.mark.timeout(60)
def test_an_instance_without_a_pidfd_is_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Out of descriptors, no pidfd of a directly forked instance can be opened, and it
    # has no exit pipe: it is looked at every SWEEP_S instead, and its end is seen.
    (tmp_path / "spec.yaml").write_text(
        "start_method: fork\nprocesses:\n"
        "  quick: {target: naps:brief, replicas: 2}\n  slow: {target: naps:long}\n"
    )
    (tmp_path / "naps.py").write_text(NAPS)
    with _opened_launcher(tmp_path / "spec.yaml") as (launcher, plan):

        def no_descriptor_left(pid: int) -> int:
            raise OSError(errno.EMFILE, "Too many open files")

        monkeypatch.setattr(os, "pidfd_open", no_descriptor_left)
        launcher.start_many([(instance, 0) for instance in plan.instances])
        assert {(h.ended, h.swept) for h in launcher.handles.values()} == {(None, True)}
        ended = [e.name for e in _events(launcher, Exited, 2) if isinstance(e, Exited)]
        assert sorted(ended) == ["quick[0]", "quick[1]"]
        assert list(launcher.handles) == ["slow"]


ENDINGS = """\
import atexit
import os


def leave_a_mark(marks):
    atexit.register(lambda: open(os.path.join(marks, str(os.getpid())), "w").close())


def put_many(q, n):
    for i in range(n):
        q.put(i)  # more than the pipe holds: the rest waits in the feeder thread


def get_all(q, n):
    return sum(1 for _ in range(n) if q.get(timeout=10) is not None)
"""


@pytest.mark.timeout(60)
def test_a_forked_instance_ends_as_multiprocessing_ends_it(tmp_path: Path, forked_by: str) -> None:
    # From Python 3.13 on, multiprocessing's fork start runs atexit in the child, which
    # is where it flushes what a queue's feeder thread still holds: an instance forked
    # by topo must end the same way, or a producer that returns loses what it put.
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "spec.yaml").write_text(
        "start_method: fork\nchannels:\n  q: {kind: queue, transport: mp}\nprocesses:\n"
        f"  marker: {{target: endings:leave_a_mark, args: {{marks: '{marks}'}}}}\n"
        "  producer: {target: endings:put_many, uses: {q: q}, args: {n: 20000}}\n"
        "  consumer: {target: endings:get_all, uses: {q: q}, args: {n: 20000}}\n"
    )
    (tmp_path / "endings.py").write_text(ENDINGS)
    with _opened_launcher(tmp_path / "spec.yaml") as (launcher, plan):
        launcher.start_many([(instance, 0) for instance in plan.instances])
        events = _events(launcher, Exited, 3)
        assert {e.name: e.code for e in events if isinstance(e, Exited)} == dict.fromkeys(
            ["marker", "producer", "consumer"], 0
        )
        assert [e.value for e in events if e.name == "consumer" and isinstance(e, Returned)] == [
            20000
        ]
    # atexit runs in an instance exactly where it runs under multiprocessing's fork
    assert bool(list(marks.iterdir())) is launcher_module._ATEXIT_IN_CHILD


STDIN_READER = """\
import os
import sys


def read():
    own = os.readlink(f"/proc/self/fd/{sys.stdin.fileno()}")
    return [sys.stdin.read(), own, os.readlink("/proc/self/fd/0"), sys.__stdin__.closed]


def _read_and_send(out):
    out.send(sys.stdin.read())


def read_in_a_child():
    # what an instance forks in turn with multiprocessing gets multiprocessing's stdin
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    ours, theirs = fork.Pipe()
    child = fork.Process(target=_read_and_send, args=(theirs,))
    child.start()
    theirs.close()  # EOFError below if the child dies without sending
    read = ours.recv()
    child.join()
    return [read, child.exitcode]
"""


def _reader_result(tmp_path: Path, method: str, function: str) -> Any:
    """What ``stdin_reader:function`` returns in a ``topo run`` given text on stdin."""
    (tmp_path / "spec.yaml").write_text(
        f"start_method: {method}\nprocesses:\n  reader: {{target: stdin_reader:{function}}}\n"
    )
    (tmp_path / "stdin_reader.py").write_text(STDIN_READER)
    done = subprocess.run(
        [sys.executable, "-m", "topo", "run", "--json", "-q", "--no-record", "spec.yaml"],
        input="typed at the terminal\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=50,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["processes"]["reader"]["result"]


@pytest.mark.timeout(60)
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd")
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_an_instance_reads_nothing_of_what_topo_was_given_on_stdin(
    tmp_path: Path, method: str
) -> None:
    # As under multiprocessing: sys.stdin reads /dev/null in every instance, and the
    # stdin it had is closed; descriptor 0 is left as it was. (A forked instance is given
    # a file topo opened once: multiprocessing opens one in each.)
    read, own, fd0, closed = _reader_result(tmp_path, method, "read")
    assert (read, own, closed) == ("", os.devnull, True)
    assert fd0.startswith("pipe:")


@pytest.mark.timeout(60)
def test_what_a_forked_instance_forks_reads_nothing_from_stdin(tmp_path: Path) -> None:
    # A forked instance's stdin comes from topo's process; a process it forks in turn
    # with multiprocessing gets multiprocessing's own, not a closed file.
    assert _reader_result(tmp_path, "fork", "read_in_a_child") == ["", 0]


class _RemarkedAfterFork:
    """What multiprocessing resets in a forked child (a queue, a lock): registered with
    ``util.register_after_fork``, it leaves a mark named by the child's pid."""

    def __init__(self, marks: Path) -> None:
        self.marks = marks

    def reset(self) -> None:
        (self.marks / str(os.getpid())).touch()


@pytest.mark.timeout(60)
def test_what_multiprocessing_resets_after_a_fork_is_reset_in_a_forked_instance(
    tmp_path: Path, forked_by: str
) -> None:
    from multiprocessing import util

    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "spec.yaml").write_text(
        "start_method: fork\nprocesses:\n  child: {target: parentage:parent}\n"
    )
    (tmp_path / "parentage.py").write_text(PARENTAGE)
    reset = _RemarkedAfterFork(marks)
    util.register_after_fork(reset, _RemarkedAfterFork.reset)
    try:
        with _opened_launcher(tmp_path / "spec.yaml") as (launcher, plan):
            (pid,) = launcher.start_many([(plan.instances[0], 0)])
            assert _events(launcher, Returned, 1)
    finally:
        del reset  # out of multiprocessing's weak registry
    assert [p.name for p in marks.iterdir()] == [str(pid)]
