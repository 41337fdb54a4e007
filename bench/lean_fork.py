"""Study for issue 15, point 5: what forking from topo's process costs per instance.

Not a comparison with topo itself: three ways of forking N instances that each write
one pickled stamp to a pipe and exit, timed from the first fork to the last one reaped.

- ``direct, lean``: forked from a process that imported nothing of topo (the size of a
  small hand-written script);
- ``direct, topo-sized``: forked from a process holding what topo's holds at its first
  fork (its run-time modules, a second run of a spec: ~12 MB anonymous memory);
- ``from a lean forker``: the same topo-sized process, but the instances are forked by
  a process it forked before importing anything, which it sends the jobs in batches
  (each pickled, with its pipe's descriptor, over an AF_UNIX socket) and which reaps
  them and sends back their exit statuses.

The cost of a fork grows with the memory and mappings of the process that forks, and
each page it writes afterwards is copied again. What the study measures is how much of
topo's per-instance start-up under fork that is, and how much a lean forker gives back.

    python bench/lean_fork.py [--pairs 7]
"""

from __future__ import annotations

import array
import os
import pickle
import socket
import sys
import time

VARIANTS = ("direct, lean", "direct, topo-sized", "from a lean forker")
JOB = {
    "target": "startup_target:stamp",
    "args": {},
    "env": {},
    "names": {f"p{i}": f"chan{i}" for i in range(8)},
    "context": ("x" * 64, 1234, "/tmp", 0),
}
BATCH = 200  # descriptors per message, under the kernel's 253 (SCM_MAX_FD)


def _instance(report_fd: int, job: dict[str, object]) -> None:
    os.write(report_fd, pickle.dumps((job["target"], time.time())))
    os._exit(0)


def _forker(sock: socket.socket) -> None:  # pragma: no cover - runs in the forked forker
    """Fork one instance per job received, send back the pids, then the statuses."""
    while True:
        fds = array.array("i")
        msg, ancillary, _, _ = sock.recvmsg(1 << 20, socket.CMSG_LEN(BATCH * fds.itemsize))
        if not msg:
            os._exit(0)
        for _, _, data in ancillary:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        pids = []
        for job, fd in zip(pickle.loads(msg), fds, strict=True):
            pid = os.fork()
            if pid == 0:
                sock.close()
                _instance(fd, pickle.loads(job))
            pids.append(pid)
        for fd in fds:
            os.close(fd)
        sock.send(pickle.dumps(pids))
        sock.send(pickle.dumps([os.waitpid(p, 0)[1] for p in pids]))


def one_run(variant: str, n: int) -> float:
    """Seconds from the first fork to the last instance reaped (in a fresh process)."""
    forker = None
    if variant == "from a lean forker":
        ours, its = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if os.fork() == 0:
            ours.close()
            _forker(its)
        its.close()
        forker = ours
    if variant != "direct, lean":  # what topo's process holds when it forks (warm spec)
        import topo.api
        import topo.backends.local.launcher
        import topo.cache
        import topo.console
        import topo.record
        import topo.supervise  # noqa: F401 - its memory is the point
    started = time.perf_counter()
    pipes = [os.pipe() for _ in range(n)]
    if forker is None:
        pids = []
        for _, w in pipes:
            pid = os.fork()
            if pid == 0:
                _instance(w, JOB)
            pids.append(pid)
        for r, w in pipes:
            os.close(w)
            os.read(r, 4096)
        for pid in pids:
            os.waitpid(pid, 0)
    else:
        for at in range(0, n, BATCH):
            batch = pipes[at : at + BATCH]
            fds = array.array("i", [w for _, w in batch])
            data = pickle.dumps([pickle.dumps(JOB) for _ in batch])
            forker.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            for _, w in batch:
                os.close(w)
            pickle.loads(forker.recv(1 << 20))  # pids
            for r, _ in batch:
                os.read(r, 4096)
            pickle.loads(forker.recv(1 << 20))  # statuses
    return time.perf_counter() - started


def main(pairs: int) -> None:
    import statistics  # here: the processes measured import only what they need
    import subprocess

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as bench/common.py does

    sizes = (1, 256)
    times: dict[tuple[str, int], list[float]] = {}
    for round_ in range(pairs + 1):  # the first round warms up, and is dropped
        for n in sizes:
            for variant in VARIANTS:
                out = subprocess.run(
                    [sys.executable, __file__, "--one", variant, str(n)],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                if round_:
                    times.setdefault((variant, n), []).append(float(out))
    print("| forked | 1 instance | 256 instances | per instance |")
    print("| --- | --- | --- | --- |")
    for variant in VARIANTS:
        one, many = (statistics.median(times[variant, n]) for n in sizes)
        per = (many - one) / (sizes[1] - 1)
        print(f"| {variant} | {one * 1e3:.2f} ms | {many * 1e3:.1f} ms | {per * 1e3:.3f} ms |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(f"{one_run(sys.argv[2], int(sys.argv[3])):.6f}")
    else:
        pairs = int(sys.argv[sys.argv.index("--pairs") + 1]) if "--pairs" in sys.argv else 7
        main(pairs)
