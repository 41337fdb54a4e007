"""topo.backends.local.primitives: the run's own names in /dev/shm, exactly."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

import topo
from topo.backends.local.primitives import Primitives

SPECS = Path(__file__).resolve().parent.parent / "specs"


def _in_dev_shm() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith(("sem.mp-", "psm_"))}


@pytest.mark.parametrize(
    "spec", ["pipeline", "shm_frames", "event", "barrier", "joinable_queue", "shared_value"]
)
def test_shared_names_are_exactly_what_the_run_made(spec: str) -> None:
    # The guardian unlinks these when topo is killed: a name of another run's (a
    # listing of /dev/shm would take those too) must never be among them.
    plan = topo.load(SPECS / f"{spec}.yaml", seed=1)
    before = _in_dev_shm()
    primitives = Primitives(plan, multiprocessing.get_context(plan.spec.start_method))
    try:
        made = _in_dev_shm() - before
        assert made, "the spec makes semaphores"
        names = primitives.shared_names()
        assert {n for n in names if not n.endswith("*")} == made
        # A queue's files of big messages: a prefix that only this run's segment names.
        for pattern in (n for n in names if n.endswith("*")):
            assert any(pattern == f"topo-{segment}-*" for segment in made), pattern
    finally:
        primitives.close()
