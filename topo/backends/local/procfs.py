"""What Linux's /proc tells of an instance: its CPU time and its main thread's activity.

Elsewhere every reader returns None, and the supervisor never declares a deadlock.
"""

from __future__ import annotations

import os


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
