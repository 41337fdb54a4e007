"""The T0xx checks: references between processes, channels and locks, and targets."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from topo.checks import SECTION_OF_ROLE, Finding, check
from topo.hints import did_you_mean
from topo.model import (
    ConditionLock,
    NdarrayChannel,
    ObjectChannel,
    PipeChannel,
)
from topo.resolve import Plan
from topo.targets import (
    TargetError,
    load_target,
    signature_problem,
    signature_text,
    unknown_parameters,
)


def _bindings(plan: Plan) -> Iterator[tuple[str, str, str, str]]:
    """(process, section, param, name) for every binding, once per process.

    Read from the instances: ``q${replica}`` names a different channel in each.
    """
    seen: set[tuple[str, str, str, str]] = set()
    for inst in plan.instances:
        for b in inst.bindings:
            for role in sorted(b.roles):
                found = (inst.process, SECTION_OF_ROLE[role], b.param, b.name)
                if found not in seen:
                    seen.add(found)
                    yield found


@check("T030", "error", "a binding names no channel or lock")
def unknown_binding(plan: Plan) -> Iterator[Finding]:
    known = set(plan.spec.channels) | set(plan.spec.locks)
    for pname, section, param, name in _bindings(plan):
        if name not in known:
            yield Finding(
                ("processes", pname, section, param),
                f"process {pname!r} binds {name!r} under {section}, but no channel or lock "
                f"has that name{did_you_mean(name, known)}",
            )


@check("T031", "error", "a lock or pipe bound in a section that cannot hold it")
def misplaced_binding(plan: Plan) -> Iterator[Finding]:
    for pname, section, param, name in _bindings(plan):
        loc = ("processes", pname, section, param)
        if name in plan.spec.locks and section != "uses":
            yield Finding(
                loc, f"lock {name!r} is under {section} of {pname!r}: locks go under uses"
            )
        channel = plan.spec.channels.get(name)
        if isinstance(channel, PipeChannel) and not channel.duplex and section == "uses":
            yield Finding(
                loc,
                f"one-way pipe {name!r} is under uses of {pname!r}, so it is not clear which end "
                "it gets: put it under inputs (receiving end) or outputs (sending end)",
            )


@check("T032", "error", "'after' names no process, or the process itself")
def unknown_after(plan: Plan) -> Iterator[Finding]:
    for pname, process in plan.spec.processes.items():
        for i, other in enumerate(process.after):
            if other == pname:
                yield Finding(
                    ("processes", pname, "after", i),
                    f"process {pname!r} waits for itself to finish, so it never starts",
                )
            elif other not in plan.spec.processes:
                yield Finding(
                    ("processes", pname, "after", i),
                    f"process {pname!r} waits for {other!r}, which is not a process"
                    f"{did_you_mean(other, plan.spec.processes)}",
                )


@check("T033", "error", "a channel and a lock share a name")
def shared_name(plan: Plan) -> Iterator[Finding]:
    for name in sorted(set(plan.spec.channels) & set(plan.spec.locks)):
        yield Finding(
            ("locks", name),
            f"{name!r} is both a channel and a lock: bindings could not tell which one is meant",
            key=True,
        )


# Targets imported for a plan, kept as long as the plan (plans are hashed by identity).
_TARGETS: weakref.WeakKeyDictionary[Plan, dict[str, Any]] = weakref.WeakKeyDictionary()


def _load(plan: Plan, target: str) -> Any:
    """``load_target`` once per distinct target of a plan: the callable or its TargetError."""
    found = _TARGETS.setdefault(plan, {})
    if target not in found:
        try:
            found[target] = load_target(target, plan.spec_dir)
        except TargetError as e:
            found[target] = e
    return found[target]


@check("T040", "error", "a target cannot be imported or called")
def target_imports(plan: Plan) -> Iterator[Finding]:
    for pname, process in plan.spec.processes.items():
        loaded = _load(plan, process.target)
        if isinstance(loaded, TargetError):
            yield Finding(("processes", pname, "target"), f"target of {pname!r}: {loaded}")
    for name, channel in plan.spec.channels.items():
        if isinstance(channel, ObjectChannel):
            loaded = _load(plan, channel.factory)
            if isinstance(loaded, TargetError):
                yield Finding(("channels", name, "factory"), f"factory of {name!r}: {loaded}")


@check("T041", "error", "a target's signature cannot take what the spec binds")
def target_signature(plan: Plan) -> Iterator[Finding]:
    for pname, process in plan.spec.processes.items():
        fn = _load(plan, process.target)
        if isinstance(fn, TargetError):
            continue  # T040 says it
        names = [*process.args, *process.inputs, *process.outputs, *process.uses]
        unknown = unknown_parameters(fn, names)
        if unknown:  # each at its key, with the signature and a did-you-mean
            for section in ("args", "inputs", "outputs", "uses"):
                for key in getattr(process, section):
                    if key in unknown:
                        yield Finding(
                            ("processes", pname, section, key),
                            f"{process.target} takes no parameter {key!r}{unknown[key]}: "
                            f"it is {signature_text(fn)}, and calling it for {pname!r} "
                            "would fail",
                            key=True,
                        )
            continue
        problem = signature_problem(fn, names)
        if problem:
            yield Finding(
                ("processes", pname, "target"),
                f"{process.target} {problem}: it is {signature_text(fn)}, and calling it "
                f"for {pname!r} would fail",
            )
    for name, channel in plan.spec.channels.items():
        if isinstance(channel, ObjectChannel):
            fn = _load(plan, channel.factory)
            if isinstance(fn, TargetError):
                continue
            problem = signature_problem(fn, channel.args)
            if problem:
                yield Finding(
                    ("channels", name, "factory"),
                    f"{channel.factory} {problem}: building {name!r} would fail",
                )


@check("T050", "error", "a pipe end held by more or fewer instances than it has ends")
def pipe_ends(plan: Plan) -> Iterator[Finding]:
    for name, channel in plan.spec.channels.items():
        if not isinstance(channel, PipeChannel):
            continue
        users = plan.users_of(name)
        loc = ("channels", name)
        if channel.duplex:
            holders = sorted({inst.name for inst, _ in users})
            if len(holders) != 2:
                who = ", ".join(holders) or "no instance"
                yield Finding(
                    loc,
                    f"duplex pipe {name!r} has two ends but is bound by "
                    f"{len(holders)} instance(s) ({who}): it needs exactly two "
                    "(sharing an end corrupts data)",
                    key=True,
                )
            continue
        for role, word in (("input", "receiving"), ("output", "sending")):
            holders = sorted({inst.name for inst, b in users if role in b.roles})
            if len(holders) > 1:
                yield Finding(
                    loc,
                    f"the {word} end of one-way pipe {name!r} is held by "
                    f"{len(holders)} instances ({', '.join(holders)}): a pipe end "
                    "used by several processes at once corrupts data",
                    key=True,
                )


@check("T060", "error", "a shared-memory array that cannot be built")
def ndarray_needs_numpy(plan: Plan) -> Iterator[Finding]:
    arrays = [(n, c) for n, c in plan.spec.channels.items() if isinstance(c, NdarrayChannel)]
    if not arrays:
        return
    try:
        import numpy as np
    except ImportError:
        for name, _ in arrays:
            yield Finding(
                ("channels", name),
                f"ndarray {name!r} needs numpy, which is not installed: pip install 'topo[numpy]'",
                key=True,
            )
        return
    for name, channel in arrays:
        try:
            np.dtype(channel.dtype)
        except TypeError:
            yield Finding(
                ("channels", name, "dtype"),
                f"ndarray {name!r} has dtype "
                f"{channel.dtype!r}, which numpy does not know (try float64, int32)",
            )


@check("T052", "error", "a queue with transport: pipe read by more than one instance")
def pipe_transport_readers(plan: Plan) -> Iterator[Finding]:
    for name, channel in plan.spec.channels.items():
        if getattr(channel, "transport", None) != "pipe":
            continue
        readers = plan.readers_of(name)
        if len(readers) > 1:
            yield Finding(
                ("channels", name, "transport"),
                f"{channel.kind} {name!r} has transport: pipe, which one reader reads "
                f"ahead in batches, but {len(readers)} instances read it "
                f"({_names(readers)}): use transport: auto (or socket) for several readers",
            )


def _names(instances: list[str], most: int = 4) -> str:
    return ", ".join(instances[:most]) + (
        f" and {len(instances) - most} more" if len(instances) > most else ""
    )


@check("T051", "error", "a condition over a name that is not a lock or rlock")
def condition_lock(plan: Plan) -> Iterator[Finding]:
    for name, lock in plan.spec.locks.items():
        if not isinstance(lock, ConditionLock) or lock.lock is None:
            continue
        other = plan.spec.locks.get(lock.lock)
        loc = ("locks", name, "lock")
        if other is None:
            names = [n for n, m in plan.spec.locks.items() if m.kind in ("lock", "rlock")]
            yield Finding(
                loc,
                f"condition {name!r} is over {lock.lock!r}, which is not a lock"
                f"{did_you_mean(lock.lock, names)}",
            )
        elif other.kind not in ("lock", "rlock"):
            yield Finding(
                loc,
                f"condition {name!r} is over {lock.lock!r}, a {other.kind}: a "
                "condition needs a lock or rlock",
            )
        elif other.via_manager != lock.via_manager:
            yield Finding(
                loc,
                f"condition {name!r} and its lock {lock.lock!r} must both be "
                "built by the manager, or neither",
            )
