"""Finding the Python callables a spec names (``module:function``).

The spec's folder goes first on ``sys.path`` so that ``experiment.yaml`` can name
functions in ``experiment.py`` beside it; the same rule holds in the parent (for
validation) and in every child (before the target runs).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any


class TargetError(Exception):
    """A target that cannot be imported or called; the message says why, in one line."""


def add_to_path(folder: str | Path) -> None:
    folder = str(folder)
    if sys.path[:1] == [folder]:  # first already (in a forked instance, always)
        return
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)


def load_target(target: str, folder: str | Path | None = None) -> Callable[..., Any]:
    """Import ``module:attr.path`` (with ``folder`` first on sys.path) and return it."""
    if folder is not None:
        add_to_path(folder)
    module_name, _, attr_path = target.partition(":")
    try:
        obj: Any = _imported(module_name) or importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            from topo.hints import did_you_mean  # here: every instance imports this module

            package, _, module = e.name.rpartition(".")
            hint = did_you_mean(module, _modules_beside(e.name), prefix=package)
            raise TargetError(f"module {module_name!r} is not found{hint}") from None
        raise TargetError(f"importing {module_name!r} fails: {e}") from None
    except BaseException as e:
        raise TargetError(f"importing {module_name!r} fails: {type(e).__name__}: {e}") from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            from topo.hints import did_you_mean

            hint = did_you_mean(part, [n for n in dir(obj) if not n.startswith("_")])
            raise TargetError(f"{module_name!r} has no attribute {attr_path!r}{hint}") from None
    if not callable(obj):
        raise TargetError(f"{target!r} is not callable")
    return obj


def _imported(name: str) -> Any:
    """The module ``name`` if it is imported already and whole (in a forked instance,
    by topo's checks): then no import machinery runs, whose code each forked instance
    would copy page by page. One still being imported goes through importlib, which
    waits for it."""
    module = sys.modules.get(name)
    if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
        return None
    return module


def _modules_beside(name: str) -> list[str]:
    """The modules that could have been meant by ``name``: those of its package, or the
    top-level ones on sys.path (the spec's folder first)."""
    import pkgutil

    package, _, _ = name.rpartition(".")
    try:
        path = importlib.import_module(package).__path__ if package else None
    except (ImportError, AttributeError):
        return []
    return [m.name for m in pkgutil.iter_modules(path)]


def unknown_parameters(fn: Callable[..., Any], names: Iterable[str]) -> dict[str, str] | None:
    """Each of ``names`` that ``fn`` takes no parameter for -> a did-you-mean (or "");
    None when its signature cannot be read (a builtin) or it takes ``**kwargs``."""
    import inspect

    from topo.hints import did_you_mean

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    accepted = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return {n: did_you_mean(n, accepted) for n in names if n not in accepted and n != "ctx"}


def signature_text(fn: Callable[..., Any]) -> str:
    """``work(inbox, count=1)``: how the target is declared, for messages."""
    import inspect

    try:
        return f"{getattr(fn, '__name__', 'target')}{inspect.signature(fn)}"
    except (TypeError, ValueError):
        return getattr(fn, "__name__", "target")


def wants_ctx(fn: Callable[..., Any]) -> bool:
    """Whether the target takes the run context: a parameter named ``ctx``."""
    code = getattr(fn, "__code__", None)
    if code is not None and not hasattr(fn, "__wrapped__") and not hasattr(fn, "__signature__"):
        # A plain function or method: its code object tells, and every instance is
        # spared importing inspect.
        return "ctx" in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    import inspect

    try:
        return "ctx" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def signature_problem(fn: Callable[..., Any], names: Iterable[str]) -> str | None:
    """Why ``fn(**{name: ...})`` would fail, or None when it can take exactly these names."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None  # builtins without a signature: nothing to check
    names = set(names)
    if "ctx" in sig.parameters:
        names.add("ctx")
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        accepted = names
    else:
        accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(names - accepted)
    if unknown:
        return f"takes no parameter {', '.join(map(repr, unknown))}"
    # A positional-only parameter can never be given: targets get keywords only.
    missing = sorted(
        p.name
        for p in params
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and (p.name not in names or p.kind is p.POSITIONAL_ONLY)
    )
    if missing:
        return f"needs {', '.join(map(repr, missing))}, which the spec does not give"
    return None


def call_target(
    target: str, args: Mapping[str, Any], objects: Mapping[str, Any], context: Any
) -> Any:
    """Call an instance's target as every backend does: imported from the spec's
    folder, with its args and bound objects as keywords (shared-memory arrays as numpy
    views), ``ctx`` if it takes one, ``random`` (and numpy's) seeded first."""
    fn = load_target(target, context.spec_dir)
    kwargs = {**args, **_attached(objects)}
    if wants_ctx(fn):
        kwargs["ctx"] = context
    _seed(context.seed)
    return fn(**kwargs)


def target_traceback(error: BaseException) -> str:
    """What a target's exception prints, without the frame that called the target."""
    import traceback

    tb = error.__traceback__.tb_next if error.__traceback__ else None
    return "".join(traceback.format_exception(type(error), error, tb))


def _attached(objects: Mapping[str, Any]) -> dict[str, Any]:
    """The objects as targets get them: shared-memory arrays as numpy views."""
    shm = sys.modules.get("topo.backends.local.shm")  # imported by unpickling a handle
    if shm is None:
        return dict(objects)
    return {k: v.attach() if isinstance(v, shm.SharedArray) else v for k, v in objects.items()}


def _seed(seed: int) -> None:
    import random

    random.seed(seed)
    numpy = sys.modules.get("numpy")  # seeded when the target's module uses it
    if numpy is not None:
        numpy.random.seed(seed)
