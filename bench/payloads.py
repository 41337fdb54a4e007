"""Big payloads: 1 MiB numpy arrays through a queue, multiprocessing.Queue vs `transport: shm`.

Runs a generated spec with `topo run`: a producer puts N arrays of 1 MiB (float64,
131,072 elements) into a queue and a consumer gets them; both wait on a barrier first
and return time.monotonic(), so the time is the transfer alone (µs per message and
GB/s). Variants, interleaved round by round:
  - "queue" : `kind: queue` (multiprocessing.Queue) - the baseline;
  - "queue, transport: shm" : the shared-memory queue of issue 6 (target: >= 10x).
The shm variant runs only when `topo validate` accepts `transport: shm` (checked first);
otherwise it is reported as absent. SHM_CHANNEL holds its options: adjust it to the
options the channel kind ends up with.

    python bench/payloads.py [--quick]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from common import ROOT, Comparison, comparison_rows, interleave, save, standalone, table, topo_cmd

MiB = 1 << 20
# The channel under test; its keys beyond `kind` follow the shm queue's spec options.
MP_CHANNEL = "{kind: queue, maxsize: 8}"
SHM_CHANNEL = "{kind: queue, transport: shm, maxsize: 8, slot_size: 1100000}"

TARGETS = """
import time

import numpy as np


def produce(out, start, n):
    array = np.ones(131072, dtype=np.float64)  # 1 MiB
    start.wait()
    t0 = time.monotonic()
    for i in range(n):
        array[0] = i
        out.put(array)
    return t0


def consume(inbox, start, n):
    start.wait()
    total = 0.0
    for _ in range(n):
        total += float(inbox.get()[0])
    return time.monotonic()
"""

SPEC = """\
topo: 1
name: payloads
start_method: fork
channels:
  data: {channel}
locks:
  start: barrier
processes:
  producer:
    target: payload_targets:produce
    args: {{n: {n}}}
    outputs: {{out: data}}
    uses: {{start: start}}
  consumer:
    target: payload_targets:consume
    args: {{n: {n}}}
    inputs: {{inbox: data}}
    uses: {{start: start}}
"""


def shm_supported(folder: Path) -> tuple[bool, str]:
    spec = folder / "probe.yaml"
    spec.write_text(SPEC.format(channel=SHM_CHANNEL, n=1))
    proc = subprocess.run(
        topo_cmd("validate", str(spec)), capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    return proc.returncode == 0, proc.stderr.strip()


def transfer(spec: Path, n: int) -> float:
    """µs per 1 MiB message, from the targets' own stamps."""
    argv = topo_cmd("run", "--json", "-q", "--no-record", str(spec))
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec.name}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    processes = json.loads(proc.stdout)["processes"]
    return (processes["consumer"]["result"] - processes["producer"]["result"]) / n * 1e6


def run(quick: bool = False, pairs: int = 5) -> dict[str, Any]:
    n = 200 if quick else 1000
    with tempfile.TemporaryDirectory(prefix="topo-bench-payloads-") as tmp:
        folder = Path(tmp)
        (folder / "payload_targets.py").write_text(TARGETS)
        supported, why = shm_supported(folder)
        variants = {"queue": folder / "mp.yaml"}
        variants["queue"].write_text(SPEC.format(channel=MP_CHANNEL, n=n))
        if supported:
            variants["queue, transport: shm"] = folder / "shm.yaml"
            variants["queue, transport: shm"].write_text(SPEC.format(channel=SHM_CHANNEL, n=n))
        samples = interleave(
            {name: partial(transfer, spec, n) for name, spec in variants.items()},
            pairs,
            progress="1 MiB numpy arrays",
        )
    label = f"1 MiB numpy arrays ({n:,} msgs)"
    comparison = Comparison(
        "payloads",
        label,
        "us/msg",
        samples,
        "queue",
        extra={"shm_supported": supported, "validate_output": why[-1000:], "n": n},
    )
    headers, rows = comparison_rows([comparison])
    headers[-1] = "ratio to multiprocessing.Queue: median [min-max]"
    headers += ["GB/s", "speed-up vs Queue, pair by pair: median [min-max]"]
    for row, variant in zip(rows, samples, strict=True):
        row.append(f"{MiB / comparison.summary()[variant]['median'] / 1e3:.2f}")
        ups = [1 / r for r in comparison.ratios(variant)]
        row.append(f"{statistics.median(ups):.1f}x [{min(ups):.1f}-{max(ups):.1f}]")
    text = table("big payloads: 1 MiB numpy arrays through a queue", headers, rows)
    if not supported:
        text += (
            "\n\n`transport: shm` is not accepted by `topo validate` yet: only the "
            "multiprocessing.Queue baseline was measured.\n" + why[-600:]
        )
    save("payloads", {"comparisons": [comparison.to_json()], "quick": quick})
    return {"tables": [text], "comparisons": [comparison]}


if __name__ == "__main__":
    sys.exit(standalone(run, __doc__))
