"""What the Ray backend moves, on a local Ray: small messages and big arrays through a
queue from one instance to another, and the pipeline spec beside the local backend.

Times are taken inside the targets (the writer's first put to the reader's last get),
so Ray's start-up and the workers' import time are left out; the pipeline spec is
timed as a whole run (``duration_s``), on both backends, rounds interleaved.

    python bench/on_ray.py [--quick]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import topo

HERE = Path(__file__).resolve().parent
SPECS = HERE.parent / "specs"
MiB = 1 << 20

QUEUE_SPEC = """\
channels:
  q: {{kind: queue, maxsize: {maxsize}}}
processes:
  writer:
    target: ray_targets:write
    args: {{n: {n}, size: {size}}}
    outputs: {{out: q}}
  reader:
    target: ray_targets:read
    inputs: {{inbox: q}}
"""


def queue_case(folder: Path, n: int, size: int, maxsize: int) -> dict[str, float]:
    spec = folder / f"q_{n}_{size}_{maxsize}.yaml"
    spec.write_text(QUEUE_SPEC.format(n=n, size=size, maxsize=maxsize))
    result = topo.run(spec, backend="ray", record=False, quiet=True, output=lambda *a: None)
    assert result.ok, result.message
    started = result.processes["writer"].result
    got = result.processes["reader"].result
    seconds = got["ended"] - started
    return {"msgs_per_s": got["count"] / seconds, "bytes_per_s": got["bytes"] / seconds}


def pipeline_case(backend: str, items: int) -> float:
    result = topo.run(
        SPECS / "pipeline.yaml",
        [f"params.items={items}", "timeout=300"],
        backend=backend,
        record=False,
        quiet=True,
        output=lambda *a: None,
    )
    assert result.ok, result.message
    return items / result.duration_s


def main(quick: bool) -> None:
    import ray

    sys.path.insert(0, str(HERE))
    rounds = 2 if quick else 3
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        object_store_memory=512 * MiB,
        namespace="topo",
    )
    rows: list[tuple[str, list[float], str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "ray_targets.py").write_text((HERE / "ray_targets.py").read_text())
        n_small = 5_000 if quick else 20_000
        for maxsize, label in ((0, "unbounded"), (64, "maxsize 64")):
            samples = [queue_case(folder, n_small, 0, maxsize)["msgs_per_s"] for _ in range(rounds)]
            rows.append((f"small messages, queue {label} ({n_small:,})", samples, "msgs/s"))
        big = [queue_case(folder, 20, 16 * MiB, 0)["bytes_per_s"] / 1e9 for _ in range(rounds)]
        rows.append(("16 MiB numpy arrays, queue unbounded (20)", big, "GB/s"))
        items = 2_000 if quick else 4_000
        local: list[float] = []
        on_ray: list[float] = []
        for _ in range(rounds):  # interleaved
            local.append(pipeline_case("local", items))
            on_ray.append(pipeline_case("ray", items))
        rows.append((f"pipeline spec, local backend ({items:,} items)", local, "items/s"))
        rows.append((f"pipeline spec, ray backend ({items:,} items)", on_ray, "items/s"))
    ray.shutdown()
    print(f"{'case':<50} {'median':>12} {'min':>12} {'max':>12}  unit")
    for case, samples, unit in rows:
        print(
            f"{case:<50} {statistics.median(samples):>12,.2f} {min(samples):>12,.2f}"
            f" {max(samples):>12,.2f}  {unit}"
        )


if __name__ == "__main__":
    main("--quick" in sys.argv)
