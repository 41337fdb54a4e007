"""What Linux's /proc tells of an instance: its CPU time and its main thread's activity.

Elsewhere every reader returns None, and the supervisor never declares a deadlock.
"""

from __future__ import annotations

import os
import sys


def cpu_seconds(pid: int) -> float | None:
    """CPU time ``pid`` has used, all threads (Linux); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def activity(pid: int) -> int | None:
    """CPU ticks plus context switches of ``pid``'s main thread (Linux); None elsewhere.

    It does not change while that thread is blocked for good, and does as soon as it
    runs: the sampler's samples cannot tell a call that returns at once, again and
    again, from one that never returns.
    """
    task = f"/proc/{pid}/task/{pid}"
    try:
        with open(f"{task}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        with open(f"{task}/status", "rb") as f:
            status = f.read()
    except OSError:
        return None
    total = int(fields[11]) + int(fields[12])  # utime, stime
    for line in status.splitlines():
        if line.startswith((b"voluntary_ctxt_switches", b"nonvoluntary_ctxt_switches")):
            total += int(line.split()[1])
    return total


def children_of(pid: int) -> dict[int, str]:
    """The live processes whose parent is ``pid``: pid -> state letter (Z for a zombie)."""
    found: dict[int, str] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found[int(entry)] = fields[0].decode()
    return found


def set_child_subreaper(on: bool) -> bool:
    """Make this process the reaper of its orphaned descendants (Linux's
    PR_SET_CHILD_SUBREAPER), so that what an instance started and let go of (a double
    fork, a daemon) is still this process's to stop; return whether it was before."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    was = ctypes.c_int(0)
    libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(was), 0, 0, 0)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)
    return bool(was.value)


_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
