"""`topo validate` on generated specs of 10, 100 and 2,000 processes, and `topo --help`.

Each spec is a chain producer -> stage_1 -> ... -> collector joined by queues (valid:
no errors; 2,000 instances on 2 cores draw warning T123).
Timed as subprocesses, wall clock, interleaved with a floor that does
part of the same work by hand: for validate, `python -c` that imports yaml and loads
the same file; for --help, `python -c pass` (the interpreter's own start-up).
Targets: `topo --help` under 0.3 s; validate of 2,000 processes under 1 s. topo is
timed twice: as it runs by default (the graph checks' findings cached after the first
run of the spec, see docs/checks.md) and with the cache off, as for a new spec.

    python bench/validate.py [--quick]
"""

from __future__ import annotations

import os
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from common import (
    PYTHON,
    Comparison,
    comparison_rows,
    interleave,
    save,
    standalone,
    table,
    timed_run,
)
from common import topo_cmd as topo

TARGETS = """
def produce(out):
    pass


def stage(inbox, outbox):
    pass


def collect(inbox):
    pass
"""


COLD = {**os.environ, "TOPO_CACHE": "0"}  # as for a new or edited spec: nothing cached


def chain_spec(n: int) -> str:
    """A valid spec of n >= 2 processes in a chain of n - 1 queues."""
    lines = ["topo: 1", f"name: chain{n}", "channels:"]
    lines += [f"  q{i}: {{kind: queue, maxsize: 16}}" for i in range(n - 1)]
    lines += ["processes:", "  p0:", "    target: chain_targets:produce", "    outputs: {out: q0}"]
    for i in range(1, n - 1):
        lines += [
            f"  p{i}:",
            "    target: chain_targets:stage",
            f"    inputs: {{inbox: q{i - 1}}}",
            f"    outputs: {{outbox: q{i}}}",
        ]
    lines += [
        f"  p{n - 1}:",
        "    target: chain_targets:collect",
        f"    inputs: {{inbox: q{n - 2}}}",
    ]
    return "\n".join(lines) + "\n"


def run(quick: bool = False, pairs: int = 5) -> dict[str, Any]:
    comparisons = []
    sizes = (10, 100, 2000)
    with tempfile.TemporaryDirectory(prefix="topo-bench-validate-") as tmp:
        folder = Path(tmp)
        (folder / "chain_targets.py").write_text(TARGETS)
        help_samples = interleave(
            {
                "topo --help": lambda: timed_run(topo("--help")),
                "python -c pass": lambda: timed_run([PYTHON, "-c", "pass"]),
            },
            pairs,
            progress="topo --help",
        )
        comparisons.append(
            Comparison(
                "help", "topo --help", "s", help_samples, "python -c pass", extra={"target_s": 0.3}
            )
        )
        for n in sizes:
            spec = folder / f"chain{n}.yaml"
            spec.write_text(chain_spec(n))
            timed_run(topo("validate", str(spec)))  # must be valid
            floor = f"import yaml; yaml.safe_load(open({str(spec)!r}))"
            samples = interleave(
                {
                    "topo validate": partial(timed_run, topo("validate", str(spec))),
                    "topo validate, no graph cache": partial(
                        timed_run, topo("validate", str(spec)), env=COLD
                    ),
                    "python: yaml.safe_load": partial(timed_run, [PYTHON, "-c", floor]),
                },
                pairs,
                progress=f"validate {n}",
            )
            comparisons.append(
                Comparison(
                    "validate",
                    f"validate, {n:,} processes",
                    "s",
                    samples,
                    "python: yaml.safe_load",
                    extra={"processes": n, "target_s": 1.0 if n == 2000 else None},
                )
            )
    headers, rows = comparison_rows(comparisons)
    headers[-1] = "ratio to the floor: median [min-max]"
    text = table("validate and --help: wall clock", headers, rows)
    save("validate", {"comparisons": [c.to_json() for c in comparisons], "quick": quick})
    return {"tables": [text], "comparisons": comparisons}


if __name__ == "__main__":
    sys.exit(standalone(run, __doc__))
