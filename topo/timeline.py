"""What each instance was doing, over the run, from what the supervisor sees.

The supervisor samples, about every ``POLL_INTERVAL_S``, which instances run and what
each running one is blocked in (the launcher's ``waits()``, the same view the deadlock
detector uses, on every backend), and each queue's depth. ``Timeline`` turns those
samples into:

- a trace in the Chrome Trace Event format (``trace.json``: Perfetto, chrome://tracing
  and viztracer's viewer open it as it is): one track per instance with its states as
  slices, instants for start, exit, restart, failure and deadlock, a counter per queue;
- channel flow: per channel, peak and mean depth, and how long each process was blocked
  in each operation on it;
- per process, the share of its time running, blocked on channels, waiting on locks;
- the bottleneck: the process whose work the others waited for.

Pure: fed with times and names, it starts nothing (tests drive it by hand).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from topo.deadlock import Wait

MAX_EVENTS = 200_000  # a trace this long says so and records no more slices
RUNNING = "running"
LOCK_OPS = frozenset({"acquire"})
CHANNEL_OPS = frozenset({"get", "put", "join", "recv", "send", "poll"})


@dataclass
class _Track:
    state: str | None = None  # "running", "get:tasks", ... ; None: not running
    since: float = 0.0
    started: float | None = None  # when it was first seen running
    time: dict[str, float] = field(default_factory=lambda: defaultdict(float))


@dataclass
class Timeline:
    kinds: Mapping[str, str]  # channel or lock name -> kind ("queue", "lock", ...)
    process_of: Mapping[str, str]  # instance -> its process
    origin: float = 0.0  # the run's start, on the supervisor's clock
    tracks: dict[str, _Track] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    capped: bool = False
    depths: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))
    ended: float | None = None
    # channel -> {"writers": [process...], "readers": [...]}, from the plan
    feeders: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    _tids: dict[str, int] = field(default_factory=dict, repr=False)  # instance -> track

    # ----- what the supervisor tells -------------------------------------------------------

    def observe(
        self,
        now: float,
        running: Iterable[str],
        waits: Mapping[str, Wait],
        depths: Mapping[str, int] | None = None,
    ) -> None:
        """A sample: who runs, what each running one is blocked in, queue depths."""
        alive = set(running)
        for name in alive | {n for n, t in self.tracks.items() if t.state is not None}:
            track = self.tracks.setdefault(name, _Track())
            wait = waits.get(name) if name in alive else None
            if name not in alive:
                state = None
            elif wait is not None and wait.name is not None:
                state = f"{wait.op}:{wait.name}"
            else:
                state = RUNNING
            if state != track.state:
                self._close(name, track, now)
                track.state, track.since = state, now
                if state is not None and track.started is None:
                    track.started = now
        for queue, depth in (depths or {}).items():
            series = self.depths[queue]
            if not series or series[-1][1] != depth:
                series.append((now, depth))
                self._add(
                    {
                        "ph": "C",
                        "name": f"depth {queue}",
                        "ts": self._us(now),
                        "pid": 1,
                        "args": {"depth": depth},
                    }
                )

    def instant(self, now: float, what: str, instance: str | None = None, **args: Any) -> None:
        """start, exit, restart, failure, deadlock..."""
        event: dict[str, Any] = {
            "ph": "i",
            "name": what,
            "ts": self._us(now),
            "pid": 1,
            "s": "t" if instance else "g",
        }
        if instance is not None:
            event["tid"] = self._tid(instance)
        if args:
            event["args"] = args
        self._add(event)

    def finish(self, now: float, running: Iterable[str] = ()) -> None:
        self.observe(now, (), {})
        self.ended = now

    # ----- what comes out -------------------------------------------------------------------

    def trace(self) -> dict[str, Any]:
        """The Chrome Trace Event document (JSON object format)."""
        names = [
            {"ph": "M", "name": "thread_name", "pid": 1, "tid": self._tid(n), "args": {"name": n}}
            for n in self.process_of
        ]
        order = [
            {
                "ph": "M",
                "name": "thread_sort_index",
                "pid": 1,
                "tid": self._tid(n),
                "args": {"sort_index": i},
            }
            for i, n in enumerate(self.process_of)
        ]
        meta = {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "topo run"}}
        doc: dict[str, Any] = {
            "traceEvents": [meta, *names, *order, *self.events],
            "displayTimeUnit": "ms",
            "otherData": {"sampling": "about every 0.1 s, from the supervisor"},
        }
        if self.capped:
            doc["otherData"]["capped"] = f"no slice recorded after the first {MAX_EVENTS:,} events"
        return doc

    def current_depths(self) -> dict[str, int]:
        """Each queue's depth at the latest sample."""
        return {queue: series[-1][1] for queue, series in self.depths.items() if series}

    def shares(self, now: float | None = None) -> dict[str, dict[str, float]]:
        """Instance -> share of its life running, blocked on channels, on locks (with
        ``now``, the state it is in counts up to now: for the live table)."""
        out = {}
        for name, track in self.tracks.items():
            time = dict(track.time)
            if now is not None and track.state is not None:
                time[track.state] = time.get(track.state, 0.0) + max(0.0, now - track.since)
            total = sum(time.values())
            if total <= 0:
                continue
            channels = sum(t for s, t in time.items() if self._category(s) == "channels")
            locks = sum(t for s, t in time.items() if self._category(s) == "locks")
            out[name] = {
                "running": round(time.get(RUNNING, 0.0) / total, 4),
                "channels": round(channels / total, 4),
                "locks": round(locks / total, 4),
            }
        return out

    def channels(self) -> dict[str, dict[str, Any]]:
        """Channel -> depth (queues) and seconds each process was blocked, by operation."""
        out: dict[str, dict[str, Any]] = {}
        for name, track in self.tracks.items():
            process = self.process_of.get(name, name)
            for state, seconds in track.time.items():
                if state == RUNNING or ":" not in state:
                    continue
                op, _, channel = state.partition(":")
                if self.kinds.get(channel) is None or op not in CHANNEL_OPS:
                    continue
                blocked = out.setdefault(channel, {}).setdefault("blocked_s", {})
                by_op = blocked.setdefault(process, {})
                by_op[op] = round(by_op.get(op, 0.0) + seconds, 4)
        for queue, series in self.depths.items():
            end = self.ended if self.ended is not None else series[-1][0]
            span = max(end - series[0][0], 1e-9)
            mean = (
                sum(
                    depth * ((series[i + 1][0] if i + 1 < len(series) else end) - t)
                    for i, (t, depth) in enumerate(series)
                )
                / span
            )
            entry = out.setdefault(queue, {})
            entry["peak_depth"] = max(d for _, d in series)
            entry["mean_depth"] = round(mean, 2)
        return out

    def bottleneck(self) -> dict[str, Any] | None:
        """The process whose work others waited for, and why, from the measured shares;
        None for a run of one process or when nobody waited on anybody."""
        processes = sorted(set(self.process_of.values()))
        if len(processes) < 2:
            return None
        shares = self.shares()
        running = self._by_process(shares, "running")
        # (waiting process, op, channel) -> mean share of its instances' time
        waited: dict[tuple[str, str, str], float] = defaultdict(float)
        counts = self._instances_per_process()
        for name, track in self.tracks.items():
            total = sum(track.time.values())
            for state, seconds in track.time.items():
                op, _, channel = state.partition(":")
                if op in CHANNEL_OPS and total > 0:
                    key = (self.process_of.get(name, name), op, channel)
                    waited[key] += seconds / total / counts.get(key[0], 1)
        best: tuple[float, dict[str, Any]] | None = None
        for (waiter, op, channel), share in waited.items():
            if share < 0.2:
                continue
            # starved readers point at the channel's writers; blocked writers at readers
            reading = op in ("get", "recv", "poll", "join")
            for culprit in self.feeders.get(channel, {}).get(
                "writers" if reading else "readers", ()
            ):
                if culprit == waiter:
                    continue
                score = running.get(culprit, 0.0) * share
                if best is None or score > best[0]:
                    who = self._group(waiter)
                    reason = (
                        f"{culprit} ran {running.get(culprit, 0.0):.0%} of the time while "
                        f"{who} waited {share:.0%} in {op}() on '{channel}': "
                        f"{culprit} limits this run"
                    )
                    best = (
                        score,
                        {
                            "process": culprit,
                            "reason": reason,
                            "channel": channel,
                            "waiting": waiter,
                            "op": op,
                        },
                    )
        if best is not None and best[0] > 0.05:
            return best[1]
        return self._busiest(processes)

    def _busiest(self, processes: list[str]) -> dict[str, Any] | None:
        """When nobody waited long on a channel: the process whose instances ran longest
        (the work itself is what limits the run)."""
        busy: dict[str, float] = defaultdict(float)
        for name, track in self.tracks.items():
            process = self.process_of.get(name, name)
            busy[process] = max(busy[process], track.time.get(RUNNING, 0.0))
        if not busy or max(busy.values()) <= 0:
            return None
        culprit = max(processes, key=lambda p: busy.get(p, 0.0))
        reason = (
            f"no process waited long on another: {self._group(culprit)} ran longest "
            f"({busy[culprit]:.2f} s), its own work limits this run"
        )
        return {"process": culprit, "reason": reason}

    # ----- inside ---------------------------------------------------------------------------

    def _close(self, name: str, track: _Track, now: float) -> None:
        if track.state is None:
            return
        seconds = max(0.0, now - track.since)
        track.time[track.state] += seconds
        op, _, channel = track.state.partition(":")
        label = "running" if track.state == RUNNING else f"{op}() on '{channel}'"
        category = self._category(track.state)
        self._add(
            {
                "ph": "X",
                "name": label,
                "cat": category,
                "ts": self._us(track.since),
                "dur": round(seconds * 1e6),
                "pid": 1,
                "tid": self._tid(name),
            }
        )

    def _category(self, state: str) -> str:
        if state == RUNNING:
            return "running"
        op, _, _ = state.partition(":")
        if op in LOCK_OPS or op == "wait":
            return "locks"
        return "channels"

    def _add(self, event: dict[str, Any]) -> None:
        if len(self.events) >= MAX_EVENTS:
            self.capped = True
            return
        self.events.append(event)

    def _us(self, t: float) -> float:
        return round((t - self.origin) * 1e6, 1)

    def _tid(self, name: str) -> int:
        if len(self._tids) != len(self.process_of):
            self._tids = {n: i for i, n in enumerate(self.process_of, start=1)}
        return self._tids.get(name, 0)

    def _instances_per_process(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for process in self.process_of.values():
            counts[process] += 1
        return counts

    def _by_process(self, shares: Mapping[str, Mapping[str, float]], key: str) -> dict[str, float]:
        sums: dict[str, list[float]] = defaultdict(list)
        for name, share in shares.items():
            sums[self.process_of.get(name, name)].append(share[key])
        return {p: sum(v) / len(v) for p, v in sums.items()}

    def _group(self, process: str) -> str:
        n = self._instances_per_process().get(process, 1)
        return process if n == 1 else f"{process}[0..{n - 1}]"
