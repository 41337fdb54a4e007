"""topo.targets: importing ``module:function`` targets and checking their signatures."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from topo.targets import TargetError, add_to_path, load_target, signature_problem, wants_ctx

MODULE = """\
VALUE = 5


def f(a, b=1):
    return a + b


class Pool:
    def __init__(self, size):
        self.size = size


class Outer:
    class Inner:
        @staticmethod
        def method():
            return "inner"
"""


@pytest.fixture
def folder(tmp_path: Path, write_module: Callable[..., Path]) -> Path:
    write_module(tmp_path, "tgt_mod", MODULE)
    write_module(tmp_path, "tgt_broken_import", "import tgt_nonexistent_zzz\n")
    write_module(tmp_path, "tgt_raises", "raise RuntimeError('boom at import')\n")
    write_module(tmp_path, "tgt_syntax", "def f(:\n")
    write_module(tmp_path, "tgt_exits", "import sys\nsys.exit(3)\n")
    return tmp_path


def load_error(target: str, folder: Path) -> str:
    with pytest.raises(TargetError) as info:
        load_target(target, folder)
    return str(info.value)


# ----- load_target ------------------------------------------------------------------------


def test_module_beside_the_spec_is_found(folder: Path) -> None:
    fn = load_target("tgt_mod:f", folder)
    assert fn(a=1, b=2) == 3
    assert sys.path[0] == str(folder)


def test_nested_attribute(folder: Path) -> None:
    assert load_target("tgt_mod:Outer.Inner.method", folder)() == "inner"


def test_class_is_a_target(folder: Path) -> None:
    assert load_target("tgt_mod:Pool", folder)(size=2).size == 2


def test_dotted_module_without_folder() -> None:
    import os.path

    assert load_target("os.path:join") is os.path.join


def test_add_to_path_moves_the_folder_first(tmp_path: Path) -> None:
    add_to_path(tmp_path)
    sys.path.insert(0, "/elsewhere")
    add_to_path(tmp_path)
    assert sys.path[0] == str(tmp_path)
    assert sys.path.count(str(tmp_path)) == 1


def test_missing_module(folder: Path) -> None:
    assert load_error("tgt_nope_zzz:f", folder) == "module 'tgt_nope_zzz' is not found"


def test_missing_submodule(folder: Path) -> None:
    assert load_error("tgt_mod.sub:f", folder) == "module 'tgt_mod.sub' is not found"


def test_import_error_inside_the_module(folder: Path) -> None:
    assert load_error("tgt_broken_import:f", folder) == (
        "importing 'tgt_broken_import' fails: No module named 'tgt_nonexistent_zzz'"
    )


def test_exception_inside_the_module(folder: Path) -> None:
    assert load_error("tgt_raises:f", folder) == (
        "importing 'tgt_raises' fails: RuntimeError: boom at import"
    )


def test_syntax_error_inside_the_module(folder: Path) -> None:
    assert load_error("tgt_syntax:f", folder) == (
        "importing 'tgt_syntax' fails: SyntaxError: invalid syntax (tgt_syntax.py, line 1)"
    )


def test_sys_exit_inside_the_module(folder: Path) -> None:
    assert load_error("tgt_exits:f", folder) == "importing 'tgt_exits' fails: SystemExit: 3"


def test_missing_attribute(folder: Path) -> None:
    assert load_error("tgt_mod:nope", folder) == "'tgt_mod' has no attribute 'nope'"
    assert load_error("tgt_mod:Outer.nope", folder) == "'tgt_mod' has no attribute 'Outer.nope'"


def test_not_callable(folder: Path) -> None:
    assert load_error("tgt_mod:VALUE", folder) == "'tgt_mod:VALUE' is not callable"


# ----- signature_problem ------------------------------------------------------------------


def f(a: Any, b: Any = 1) -> None: ...


def kw(a: Any, **rest: Any) -> None: ...


def with_ctx(ctx: Any, a: Any) -> None: ...


def kwonly(*, a: Any, b: Any = 2) -> None: ...


def varargs(*args: Any) -> None: ...


def positional_only(a: Any, /, b: Any) -> None: ...


def positional_only_default(a: Any = 1, /, b: Any = 2) -> None: ...


class Factory:
    def __init__(self, size: int) -> None: ...


@pytest.mark.parametrize(
    ("fn", "names"),
    [
        (f, ["a"]),
        (f, ["a", "b"]),
        (kw, ["a", "anything", "else"]),
        (with_ctx, ["a"]),
        (kwonly, ["a"]),
        (varargs, []),
        (positional_only_default, ["b"]),
        (Factory, ["size"]),
    ],
)
def test_signature_fits(fn: Callable[..., Any], names: list[str]) -> None:
    assert signature_problem(fn, names) is None


@pytest.mark.parametrize(
    ("fn", "names", "problem"),
    [
        (f, ["a", "c", "d"], "takes no parameter 'c', 'd'"),
        (f, ["b"], "needs 'a', which the spec does not give"),
        (kw, [], "needs 'a', which the spec does not give"),
        (with_ctx, [], "needs 'a', which the spec does not give"),
        (kwonly, [], "needs 'a', which the spec does not give"),
        (varargs, ["a"], "takes no parameter 'a'"),
        (positional_only, ["a", "b"], "takes no parameter 'a'"),
        (Factory, [], "needs 'size', which the spec does not give"),
        (f, ["ctx", "a"], "takes no parameter 'ctx'"),
    ],
)
def test_signature_problem(fn: Callable[..., Any], names: list[str], problem: str) -> None:
    assert signature_problem(fn, names) == problem


def test_required_positional_only_parameter_cannot_be_given() -> None:
    # Targets are called with keyword arguments only, so `a` in `(a, /, b)` is never
    # passed: positional_only(b=1) raises TypeError at run time.
    with pytest.raises(TypeError):
        positional_only(b=1)  # type: ignore[call-arg]
    assert signature_problem(positional_only, ["b"]) == ("needs 'a', which the spec does not give")


def test_callable_without_signature_is_not_checked() -> None:
    assert signature_problem(max, ["anything"]) is None  # no signature: nothing to check
    assert not wants_ctx(max)


def test_wants_ctx() -> None:
    assert wants_ctx(with_ctx)
    assert not wants_ctx(f)
    assert not wants_ctx(print)
