"""The backend registry, and a spec refused before start by what a backend lacks."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

import topo
import topo.backends.base
from topo.backends import Capabilities, get_backend, register
from topo.backends.local.backend import LocalBackend


class Limited:
    """A backend that can build queues and locks only, without a manager or fork."""

    name = "limited"
    capabilities = Capabilities(
        kinds=frozenset({"queue", "lock"}),
        via_manager=False,
        start_methods=frozenset({"spawn"}),
        instead={"pipe": "use two queues instead"},
    )

    def launcher(self, plan: Any, options: Any) -> Any:
        raise AssertionError("a refused spec never reaches the launcher")

    def cpus(self) -> int:
        return 64

    def shared_memory(self) -> int | None:
        return None


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test registers on a registry of its own."""
    monkeypatch.setattr(topo.backends.base, "_REGISTERED", {})


def test_the_local_backend_is_found_by_name() -> None:
    backend = get_backend("local")
    assert isinstance(backend, LocalBackend)
    assert backend.name == "local"
    assert "ndarray" in backend.capabilities.kinds


def test_an_unknown_backend_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown backend 'nope': the known ones are 'local'"):
        get_backend("nope")


def test_a_registered_backend_is_found_and_its_limits_are_located(tmp_path: Path) -> None:
    register("limited", Limited)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        textwrap.dedent(
            """\
            start_method: fork
            channels:
              tasks: {kind: queue, via: manager}
              link: pipe
            processes:
              a: {target: "topo.examples.pipeline:produce", outputs: {out: tasks}}
            """
        )
    )
    found = [
        (d.code, d.line, d.col, d.message)
        for d in topo.validate(spec, backend="limited")
        if d.code == "T070"
    ]
    assert found == [
        (
            "T070",
            1,
            15,
            "the limited backend cannot start instances with 'fork'",
        ),
        ("T070", 3, 29, "the limited backend has no manager process for 'tasks'"),
        (
            "T070",
            4,
            3,
            "the limited backend cannot build a pipe ('link'); use two queues instead",
        ),
    ]
    assert "T070" not in {d.code for d in topo.validate(spec)}  # the local backend can


def test_run_refuses_before_anything_starts(tmp_path: Path) -> None:
    register("limited", Limited)
    spec = tmp_path / "spec.yaml"
    spec.write_text("channels: {link: pipe}\nprocesses:\n  a: {target: 'm:f'}\n")
    with pytest.raises(topo.SpecError, match=r"T070.*cannot build a pipe"):
        topo.run(spec, backend="limited", record=False)


def test_a_module_of_the_backends_package_is_no_backend() -> None:
    for name in ("base", "guardian"):
        with pytest.raises(ValueError, match=f"unknown backend '{name}'"):
            get_backend(name)
