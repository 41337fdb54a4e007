"""topo/model.py: a validated spec as frozen objects, read as the pydantic models are."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from topo import model, spec
from topo.api import load
from topo.document import read_source
from topo.resolve import validated_document
from topo.yamlpos import load_bytes

SPECS = sorted((Path(__file__).resolve().parents[1] / "specs").glob("*.yaml"))
PROPERTIES = (
    "via_manager",
    "waits_by_itself",
    "watched",
    "capacity",
    "shared_bytes",
    "typecode",
    "length",
    "dims",
    "cpus",
)


def _validated(path: Path) -> spec.Spec:
    document = load_bytes(read_source(str(path)), str(path))
    return validated_document(document)[0]


def _readings(obj: Any) -> dict[str, Any]:
    """Everything code reads of a model: its fields and its shape's properties."""
    names = [*type(obj).model_fields] if hasattr(type(obj), "model_fields") else [*vars(obj)]
    names += [p for p in PROPERTIES if hasattr(type(obj), p)]
    return {name: getattr(obj, name) for name in names}


def test_every_model_is_its_shape_and_has_a_frozen_form() -> None:
    models = [*spec.CHANNEL_MODELS.values(), *spec.LOCK_MODELS.values()]
    models += [spec.Process, spec.Resources, spec.Spec]
    for cls in models:
        shape = next(c for c in cls.__mro__ if c in model.FROZEN)
        assert shape.__module__ == "topo.model" and shape.__name__ == cls.__name__
        assert issubclass(model.FROZEN[shape], shape)
    assert spec.CHANNEL_KINDS == model.CHANNEL_KINDS
    assert spec.LOCK_KINDS == model.LOCK_KINDS


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_a_frozen_spec_reads_as_the_validated_one(path: Path) -> None:
    validated = _validated(path)
    frozen = spec.frozen(validated)
    assert isinstance(frozen, model.Spec) and not isinstance(frozen, spec.Spec)
    assert _readings(frozen).keys() == _readings(validated).keys()
    for section in ("channels", "locks", "processes"):
        originals, plains = getattr(validated, section), getattr(frozen, section)
        pairs = zip(originals.values(), plains.values(), strict=True)
        for original, plain in pairs:
            assert isinstance(plain, model.Frozen)
            shape = next(c for c in type(original).__mro__ if c in model.FROZEN)
            assert isinstance(plain, shape) and isinstance(original, shape)
            assert _readings(plain) == {k: spec.frozen(v) for k, v in _readings(original).items()}
    assert pickle.loads(pickle.dumps(frozen)) == frozen
    assert spec.thawed(frozen) == validated  # validates again to the same spec


def test_a_frozen_object_cannot_be_changed_and_compares_by_value() -> None:
    frozen = spec.frozen(spec.QueueChannel(kind="queue", maxsize=4))
    with pytest.raises(AttributeError, match="frozen"):
        frozen.maxsize = 5
    with pytest.raises(AttributeError, match="frozen"):
        del frozen.maxsize
    assert frozen == spec.frozen(spec.QueueChannel(kind="queue", maxsize=4))
    assert frozen != spec.frozen(spec.QueueChannel(kind="queue", maxsize=5))
    assert hash(frozen) == hash(spec.frozen(spec.QueueChannel(kind="queue", maxsize=4)))
    assert "maxsize=4" in repr(frozen)


def test_a_plan_holds_the_frozen_spec() -> None:
    plan = load(SPECS[0])
    assert isinstance(plan.spec, model.Frozen)


def test_the_shapes_import_no_pydantic() -> None:
    code = "import sys, topo.model, topo.resolve; print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
