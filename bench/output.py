"""Printed output throughput: lines per second from instances to topo's stderr.

One instance prints N short lines; stderr goes to a pipe read by this script (as in
CI, or `topo run ... 2>&1 | tee`). The hand-written baseline is the same child
printing into a pipe that its parent copies to stderr line by line, as a
hand-written supervisor that prefixes lines would. Interleaved A/B runs, best of each.

    python bench/output.py [--lines 200000] [--pairs 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

TARGET = """\
def shout(n):
    for i in range(n):
        print(f"line {i} of the output", flush=False)
    return n
"""

HAND = """\
import subprocess, sys
n = int(sys.argv[1])
child = subprocess.Popen(
    [sys.executable, "-c",
     "import sys\\nfor i in range(%d): print(f'line {i} of the output')" % n],
    stdout=subprocess.PIPE,
)
for line in child.stdout:
    sys.stderr.write("shout | " + line.decode())
child.wait()
"""


def _time(cmd: list[str], cwd: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-2000:]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("topo_args", nargs="*", default=["--no-record"], help="e.g. -- -q")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "loud.py").write_text(TARGET)
        Path(folder, "hand.py").write_text(HAND)
        Path(folder, "spec.yaml").write_text(
            textwrap.dedent(
                f"""\
                processes:
                  shout: {{target: "loud:shout", args: {{n: {args.lines}}}}}
                """
            )
        )
        topo = [sys.executable, "-m", "topo", "run", *args.topo_args, "spec.yaml"]
        hand = [sys.executable, "hand.py", str(args.lines)]
        times: dict[str, list[float]] = {"topo": [], "hand": []}
        for _ in range(args.pairs):
            times["topo"].append(_time(topo, folder))
            times["hand"].append(_time(hand, folder))
    best = {k: min(v) for k, v in times.items()}
    for k, v in best.items():
        print(f"{k:5s} {args.lines / v:10,.0f} lines/s  (best of {args.pairs}: {v:.2f} s)")
    print(f"topo / hand time ratio: {best['topo'] / best['hand']:.2f}")


if __name__ == "__main__":
    main()
