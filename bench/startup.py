"""Start-up: from `topo run` to all of 1, 32, 128 and 256 instances running, against by hand.

A generated spec runs N replicas of a target that returns time.time() and
time.process_time() at its start. For each run, "to all running" is the latest of
those stamps minus the moment the benchmark launched the command; "wall" is launch to
exit; "CPU before the target" is the median, over the run's instances, of the CPU each
spent before its target began (a fresh interpreter's start, imports, unpickling, topo's
or multiprocessing's child code): what an instance costs itself, measured in every
instance, so steadier than what a whole run's clock or CPU can show. The hand-written baseline
(bench/hand_startup.py) starts the same target N times with the same start method.
The 1-instance case is also the fixed cost of topo: a one-process spec whose target
returns at once, wall clock against the same by hand (target: at most 0.2 s more).
Per instance beyond that fixed cost, the wall clock and the CPU of the command and of
every process it started (on 2 busy cores a spawned instance's ~30 ms of CPU makes
its wall clock vary more, run to run, than the 0.2 ms per instance aimed at).
topo runs with --no-record (the hand-written script records nothing either), its
graph checks cached as from the second run of a spec; the 1-instance case also
measures it with the cache off ("no graph cache") and recording ("recorded"). Each
round runs every size of one start method (1 instance first), topo's and by hand:
the per-instance figures compare runs of the same minutes, whatever the machine's
speed does meanwhile.

A forked instance costs ~1.5 ms of wall clock here, and what topo adds to it is a tenth
of that: fork's rounds are short, and there are ``--fork-pairs`` of them (41; a median
of 5 pairs moved the 32-instance figure by ±0.3 ms from one series to the next).

    python bench/startup.py [--quick] [--pairs N] [--fork-pairs N] [--methods fork,spawn]

``--methods`` measures only those start methods; the results are saved (for
bench/run.py's report) only when all three are measured.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from common import (
    PYTHON,
    ROOT,
    Comparison,
    comparison_rows,
    interleave,
    save,
    standalone,
    table,
    topo_cmd,
)

TARGET_MODULE = """
import time


def stamp():
    return [time.time(), time.process_time()]
"""

SPEC = """\
topo: 1
name: startup
start_method: {method}
processes:
  probe:
    target: startup_target:stamp
    replicas: {n}
"""


def _cpu_of_children() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _launch(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float, str]:
    """(launch time.time(), wall seconds, CPU seconds, stdout) of one run; the CPU is
    the command's and that of every process it started and waited for."""
    launched = time.time()
    started = time.perf_counter()
    cpu = _cpu_of_children()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    wall = time.perf_counter() - started
    cpu = _cpu_of_children() - cpu
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return launched, wall, cpu, proc.stdout


def topo_run(
    spec: Path, cache: bool = True, runs_dir: Path | None = None
) -> tuple[float, float, float, float]:
    """One ``topo run``; ``cache=False`` analyses the graph afresh, as for a new spec;
    with ``runs_dir`` the run is recorded there (a run directory, its manifest, logs)."""
    env = None if cache else {**os.environ, "TOPO_CACHE": "0"}
    record = ["--runs-dir", str(runs_dir)] if runs_dir else ["--no-record"]
    argv = topo_cmd("run", "--json", "-q", *record, str(spec))
    launched, wall, cpu, out = _launch(argv, env)
    stamps = [p["result"] for p in json.loads(out)["processes"].values()]
    before = statistics.median(used for _, used in stamps)
    return max(at for at, _ in stamps) - launched, wall, cpu, before


def hand_run(folder: Path, n: int, method: str) -> tuple[float, float, float, float]:
    argv = [PYTHON, str(ROOT / "bench" / "hand_startup.py"), "--dir", str(folder)]
    argv += ["--target", "startup_target:stamp", "-n", str(n), "--start-method", method]
    launched, wall, cpu, out = _launch(argv)
    running, before = json.loads(out)
    return running - launched, wall, cpu, before


METHODS = "spawn,fork,forkserver"


def run(
    quick: bool = False, pairs: int = 5, methods: str = METHODS, fork_pairs: int = 41
) -> dict[str, Any]:
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(METHODS.split(",")))
    if unknown or not chosen:
        raise SystemExit(f"--methods: start methods among {METHODS}, not {methods!r}")
    whole = set(chosen) == set(METHODS.split(","))
    if quick:
        chosen = [m for m in chosen if m != "forkserver"] or chosen
        cases = [(n, m) for m in chosen for n in (1, 8)]
    else:
        cases = [(n, m) for m in chosen for n in (1, 32, 128, 256)]
    running: list[Comparison] = []
    walls: list[Comparison] = []
    cpus: list[Comparison] = []
    befores: list[Comparison] = []
    with tempfile.TemporaryDirectory(prefix="topo-bench-startup-") as tmp:
        folder = Path(tmp)
        (folder / "startup_target.py").write_text(TARGET_MODULE)
        for method in dict.fromkeys(m for _, m in cases):
            rounds = fork_pairs if method == "fork" and not quick else pairs
            # Every size of one start method in each round (1 instance, then 32...): what
            # is compared with the 1-instance case is measured in the same minutes.
            runs: dict[str, Any] = {}
            measured: dict[str, dict[str, dict[str, list[float]]]] = {}
            for n in (n for n, m in cases if m == method):
                spec = folder / f"startup_{method}_{n}.yaml"
                spec.write_text(SPEC.format(method=method, n=n))
                label = f"{n} instance{'s' if n > 1 else ''}, {method}"
                variants = ["topo", "hand"]
                if n == 1:
                    variants += ["topo, no graph cache", "topo, recorded"]
                # per measure (to all running, wall, CPU, CPU before the target): per
                # variant, its samples
                case = {k: {v: [] for v in variants} for k in ("running", "wall", "cpu", "before")}
                measured[label] = case

                def measure(
                    variant: str, fn: Any, *args: Any, _case: dict[str, Any] = case
                ) -> float:
                    to_running, seconds, cpu_seconds, before = fn(*args)
                    _case["running"][variant].append(to_running)
                    _case["wall"][variant].append(seconds)
                    _case["cpu"][variant].append(cpu_seconds)
                    _case["before"][variant].append(before * 1e3)
                    return to_running

                every = {
                    "topo": partial(measure, "topo", topo_run, spec),
                    "hand": partial(measure, "hand", hand_run, folder, n, method),
                    "topo, no graph cache": partial(
                        measure, "topo, no graph cache", topo_run, spec, False
                    ),
                    "topo, recorded": partial(
                        measure, "topo, recorded", topo_run, spec, True, folder / "runs"
                    ),
                }
                runs.update({f"{label}: {v}": every[v] for v in variants})
            interleave(runs, rounds, progress=method)
            for label, case in measured.items():
                # without the warm-up round, as interleave drops its samples
                kept = {k: {v: s[-rounds:] for v, s in by.items()} for k, by in case.items()}
                running.append(Comparison("startup", label, "s", kept["running"], "hand"))
                walls.append(Comparison("startup-wall", label, "s", kept["wall"], "hand"))
                cpus.append(Comparison("startup-cpu", label, "s", kept["cpu"], "hand"))
                befores.append(
                    Comparison("startup-before-target", label, "ms", kept["before"], "hand")
                )
    tables = []
    headers, rows = comparison_rows(running)
    tables.append(table("start-up: launch to all instances running", headers, rows))
    headers, rows = comparison_rows(walls)
    for c, row in zip([w for w in walls for _ in w.samples], rows, strict=True):
        if row[1] != "hand":
            diffs = [a - b for a, b in zip(c.samples[row[1]], c.samples["hand"], strict=True)]
            med = statistics.median(diffs)
            row.append(f"{med:+.3f} s [{min(diffs):+.3f}..{max(diffs):+.3f}]")
        else:
            row.append("")
    headers.append("topo - hand, pair by pair: median [min..max]")
    tables.append(
        table("start-up: wall clock, launch to exit (1 instance = fixed cost)", headers, rows)
    )
    headers, rows = _per_instance(walls)
    _, cpu_rows = _per_instance(cpus)
    for row, cpu_row in zip(rows, cpu_rows, strict=True):
        # multiprocessing's fork server is not waited for when the hand-written script
        # ends: the CPU of its instances is not counted there, and is in topo's run
        row.append(cpu_row[-1] if row[0] != "forkserver" else "(not comparable)")
    headers.append("CPU per instance beyond the fixed cost (topo's and its instances')")
    tables.append(table("start-up: what topo adds per instance", headers, rows))
    headers, rows = comparison_rows(befores)
    tables.append(
        table("start-up: CPU of an instance before its target (median of a run's)", headers, rows)
    )
    if not whole:  # a part: bench/run.py reports the whole
        return {"tables": tables, "comparisons": running, "wall": walls, "cpu": cpus}
    save(
        "startup",
        {
            "comparisons": [c.to_json() for c in running],
            "wall": [c.to_json() for c in walls],
            "cpu": [c.to_json() for c in cpus],
            "before_target": [c.to_json() for c in befores],
            "quick": quick,
        },
    )
    return {"tables": tables, "comparisons": running, "wall": walls, "cpu": cpus}


def _per_instance(measured: list[Comparison]) -> tuple[list[str], list[list[str]]]:
    """(topo - hand at N instances) - (topo - hand at 1), over N - 1: what each
    instance adds beyond the fixed cost, from the medians of the pair differences."""
    added: dict[tuple[str, int], float] = {}
    for c in measured:
        n, method = int(c.case.split()[0]), c.case.split(", ")[1]
        diffs = [a - b for a, b in zip(c.samples["topo"], c.samples["hand"], strict=True)]
        added[method, n] = statistics.median(diffs)
    rows = []
    for (method, n), extra in sorted(added.items()):
        if n > 1 and (method, 1) in added:
            per = (extra - added[method, 1]) / (n - 1) * 1e3
            rows.append([method, str(n), f"{extra:+.3f} s", f"{per:.2f} ms"])
    return ["start method", "instances", "topo - hand", "per instance beyond the fixed cost"], rows


if __name__ == "__main__":
    sys.exit(standalone(run, __doc__, methods=METHODS, fork_pairs=41))
