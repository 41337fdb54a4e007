"""Big payloads through shared memory (``specs/shm_frames.yaml``).

The camera puts 1 MiB frames into a ``transport: shm`` queue: each frame is copied
once into a shared-memory slot instead of being pickled through a pipe. The
integrator adds them into ``image``, an ``ndarray`` channel that every user sees as
the same numpy array, without copies.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from topo.context import RunContext


def camera(out: Any, frames: int, ctx: RunContext) -> int:
    """Put ``frames`` random 512x256 float64 frames (1 MiB each), then ``None``."""
    rng = np.random.default_rng(ctx.seed)
    for _ in range(frames):
        out.put(rng.random((512, 256)))
    out.put(None)
    return frames


def integrate(inbox: Any, image: np.ndarray) -> dict[str, float]:
    """Sum the frames into the shared ``image`` until ``None``; report the mean."""
    count = 0
    while (frame := inbox.get()) is not None:
        image += frame  # in place: writes straight into shared memory
        count += 1
    mean = float(image.mean() / max(count, 1))
    print(f"integrated {count} frames, mean pixel {mean:.3f}")
    return {"frames": count, "mean": round(mean, 3)}


def inspect(image: np.ndarray) -> list[int]:
    """Runs after the integrator: the shared array holds its sums."""
    return [int(image.shape[0]), int(image.shape[1])]
