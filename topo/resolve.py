"""From a document to a Plan: overrides, ``${...}`` interpolation, replicas and seeds.

Two steps, because typed keys such as ``replicas: "${params.workers}"`` must hold
their final value before the schema checks them:

1. ``prepare_document`` applies overrides (``--set``) and replaces ``${params.X}`` and
   ``${env.X}`` everywhere in the document (positions are kept).
2. ``build_plan`` expands each process into its instances and replaces the
   per-instance references ``${replica}``, ``${replicas}``, ``${name}`` and ``${seed}``
   in their ``args`` and ``env``.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import os
import re
import secrets
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from topo.context import RunContext
from topo.document import Document, Loc
from topo.errors import Diagnostic, SpecError
from topo.hints import closest
from topo.model import BarrierLock, Frozen, PipeChannel, Process, Spec, run_name_of

# `$${` writes a literal `${`; a reference is `${...}` with no nested braces.
_REFERENCE = re.compile(r"\$\$\{|\$\{([^${}]*)\}")
INSTANCE_REFERENCES = ("replica", "replicas", "name", "seed")
_MAX_PARAM_DEPTH = 32
# Interpolation can make a short document huge ("${p}${p}" twenty levels deep): a value
# longer than this is refused, before the work is done.
MAX_VALUE_CHARS = 1_000_000

Role = Literal["input", "output", "use"]


# ----- overrides --------------------------------------------------------------------------
#
# An override is either a ``key=value`` text (``--set``, ``--sweep``, a run record), whose
# value is read as a YAML scalar by ``yaml_scalar`` and nothing else, or a ``(key, value)``
# pair (a mapping given to the Python API), whose value is kept as it is. ``read_override``
# is the one reader of both; ``override_text`` writes either back as a text that reads
# back as the same value, for the run's record.

Override = str | tuple[str, Any]
Overrides = Mapping[str, Any] | Iterable[Override]
"""``{"params.workers": 8}`` (values kept as they are), ``["params.workers=8"]`` (values
read as YAML scalars, as ``--set`` does), or ``(key, value)`` pairs; one text alone is one
override."""

# What a key can be set to: one value, as YAML reads one (a date too: 2024-01-01).
_SINGLE_VALUES = (str, int, float, bool, type(None), datetime.date)


def yaml_scalar(raw: str) -> Any:
    """A command-line value read as YAML would read it (``8``, ``true``, ``1.5``, ``"8"``;
    as PyYAML reads YAML 1.1, ``1e-3`` is text, ``1.0e-3`` a float); the text itself when
    it is not valid YAML, and ``""`` for nothing."""
    if not raw.strip():
        return ""
    import yaml  # here: a run of a spec validated before reads no YAML

    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def is_single_value(value: Any) -> bool:
    """Whether an override may set a key to ``value``: no list, mapping or other object."""
    return isinstance(value, _SINGLE_VALUES)


def scalar_text(value: Any) -> str:
    """The text ``yaml_scalar`` reads back as ``value``, a single value: ``8``, ``"8"``,
    ``true``, ``null``, ``1.0e+20``; a text as it is when YAML would read it unchanged."""
    if isinstance(value, str) and value and yaml_scalar(value) == value:
        return value
    import yaml

    style = '"' if isinstance(value, str) else None
    text = yaml.safe_dump(value, default_style=style, allow_unicode=True, width=float("inf"))
    return text.removesuffix("\n").removesuffix("\n...")  # the end marker of a plain scalar


def override_items(overrides: Overrides | None) -> list[Override]:
    """Overrides as a list of texts and (key, value) pairs, in the order given."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, Mapping):
        return list(overrides.items())
    return list(overrides)


def _where(item: Override) -> str:
    if isinstance(item, str):
        return f"--set {item!r}"
    return f"override {item[0]!r}" if isinstance(item, tuple) and len(item) == 2 else "override"


def read_override(item: Override) -> tuple[list[str], Any]:
    """The one reader of overrides: ``"params.workers=8"`` -> (["params", "workers"], 8),
    the value read by ``yaml_scalar``; ``("params.label", "8")`` -> (["params", "label"],
    "8"), the value as it is. Raise ``ValueError`` for an override of another form."""
    where = _where(item)
    if isinstance(item, str):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{where} is not of the form dotted.key=value")
        value = yaml_scalar(raw)
    elif not isinstance(item, tuple) or len(item) != 2:
        raise ValueError(f"override {item!r} is neither key=value text nor a (key, value) pair")
    else:
        key, value = item
        if not isinstance(key, str) or not key.strip() or "=" in key:
            raise ValueError(f"{where}: the key must be a dotted path such as params.workers")
    if not is_single_value(value):
        what = (
            "a collection"
            if isinstance(value, Mapping | list | tuple | set | frozenset)
            else f"a {type(value).__name__}"
        )
        raise ValueError(f"{where}: the value must be a single value, not {what}")
    return [part for part in key.strip().removeprefix("+").split(".")], value


def adds_a_key(item: Override) -> bool:
    """``+params.new=1``: the override may add a key the spec does not have (Hydra's form).
    ``item`` may also be a bare dotted key (a sweep's axis)."""
    key = item.partition("=")[0] if isinstance(item, str) else item[0]
    return isinstance(key, str) and key.strip().startswith("+")


def _fields_at(data: Mapping[str, Any], keys: list[str]) -> Collection[str] | None:
    """The keys the format allows in the mapping at ``keys``; None where any key goes
    (params, args, env, bindings: the user's own names)."""
    from topo.spec import CHANNEL_MODELS, LOCK_MODELS, Process, Resources, Spec

    if not keys:
        return Spec.model_fields
    if keys[0] in ("channels", "locks") and len(keys) == 2:
        section = data.get(keys[0])
        node = section.get(keys[1]) if isinstance(section, Mapping) else None
        kind = (
            node
            if isinstance(node, str)
            else node.get("kind")
            if isinstance(node, Mapping)
            else None
        )
        model = (CHANNEL_MODELS if keys[0] == "channels" else LOCK_MODELS).get(str(kind))
        return model.model_fields if model else None
    if keys[0] == "processes" and len(keys) == 2:
        return Process.model_fields
    if keys[0] == "processes" and len(keys) == 3 and keys[2] == "resources":
        return Resources.model_fields
    return None


def override_path_problem(data: Mapping[str, Any], keys: list[str]) -> str | None:
    """Why ``keys`` names nothing in the document ``data`` (a typo would otherwise add a
    key and the run would go on without it), or None. A key the format knows (left to
    its default, such as ``start_method``) is fine; a new key of the user's own takes
    the ``+`` form."""
    node: Any = data
    for depth, key in enumerate(keys):
        if isinstance(node, str) and depth == 2 and keys[0] in ("channels", "locks"):
            node = {"kind": node}  # short form: `tasks: queue`
        if not isinstance(node, Mapping):
            return None  # a list index, or a value where a mapping should be: apply_override says
        if key in node:
            node = node[key]
            continue
        prefix = keys[:depth]
        known = _fields_at(data, prefix)
        if known is not None and key in known:
            return None
        path = ".".join(keys[: depth + 1])
        choices = [str(k) for k in (known if known is not None else node)]
        close = closest(key, choices)
        hint = f" (did you mean {'.'.join([*prefix, close])}?)" if close else ""
        if known is not None:  # a model's keys: adding it would not make it one
            where = ".".join(prefix) or "the spec"
            return f"{path} is not a key of {where}{hint}"
        return f"{path} is not in the spec{hint}; to add it, write +{'.'.join(keys)}=..."
    return None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``params.workers=8`` -> (["params", "workers"], 8); the value is a YAML scalar."""
    return read_override(text)


def override_text(item: Override) -> str:
    """An override as the run's record keeps it: a text as given; a pair as
    ``key=value``, the value written so that ``read_override`` reads the same value."""
    if isinstance(item, str):
        return item
    key, value = item
    return f"{key}={scalar_text(value)}"


def apply_override(
    data: dict[str, Any], keys: list[str], value: Any, where: str | None = None
) -> None:
    """Set ``data[k1][k2]... = value``, creating mappings on the way; ``where`` names the
    override in messages."""
    node: Any = data
    for depth, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            node = node[int(key)]
            continue
        child = node.get(key)
        if isinstance(child, str) and depth == 1 and keys[0] in ("channels", "locks"):
            child = {"kind": child}  # short form: `tasks: queue` -> `{kind: queue}`
        elif child is None:
            child = {}
        elif not isinstance(child, dict | list):
            path = ".".join(keys[: depth + 1])
            raise ValueError(
                f"{where or '--set ' + '.'.join(keys)}: {path} is {child!r}, not a mapping"
            )
        node[key] = child
        node = child
    if isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value


# ----- interpolation ----------------------------------------------------------------------


class _Unresolved(Exception):
    pass


def _substitute(text: str, lookup: Any) -> Any:
    """Replace every reference in ``text``; a string that is one reference keeps its type."""
    whole = _REFERENCE.fullmatch(text)
    if whole and whole.group(1) is not None:
        value = lookup(whole.group(1).strip())
        return text if value is _KEEP else value

    def one(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return "$${"  # kept escaped until the last pass
        value = lookup(m.group(1).strip())
        return m.group(0) if value is _KEEP else str(value)

    return _REFERENCE.sub(one, text)


_KEEP = object()  # a reference this pass leaves for a later one


def _walk(value: Any, fn: Any, loc: Loc = ()) -> Any:
    if isinstance(value, str):
        return fn(value, loc)
    if isinstance(value, dict):
        return {k: _walk(v, fn, (*loc, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, fn, (*loc, i)) for i, v in enumerate(value)]
    return value


def _escape(text: str) -> str:
    return text.replace("${", "$${")


def _unescape(value: Any) -> Any:
    return _walk(value, lambda s, _loc: s.replace("$${", "${"))


def _bounded(value: Any, what: str) -> Any:
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        raise _Unresolved(
            f"{what} grows to {len(value):,} characters, more than the {MAX_VALUE_CHARS:,} "
            "a value may have"
        )
    return value


def _document_lookup(params: Mapping[str, Any], environ: Mapping[str, str]) -> Any:
    resolving: list[str] = []
    resolved: dict[str, Any] = {}  # each parameter is interpolated once, however often used

    def lookup(ref: str) -> Any:
        if ref.startswith("params.") and ref in resolved:
            return resolved[ref]
        if ref.startswith("env."):
            var, _, default = ref[4:].partition(":-")
            if var in environ:
                return _escape(environ[var])  # a variable's `${` is text, not a reference
            if ":-" in ref:
                return default
            raise _Unresolved(
                f"environment variable {var!r} is not set (write ${{{ref}:-default}})"
            )
        if ref.startswith("params."):
            node: Any = params
            for part in ref[7:].split("."):
                if isinstance(node, dict) and part in node:
                    node = node[part]
                elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                    node = node[int(part)]
                else:
                    raise _Unresolved(f"'${{{ref}}}' names no parameter")
            if isinstance(node, str):
                if ref in resolving or len(resolving) > _MAX_PARAM_DEPTH:
                    chain = " -> ".join([*resolving, ref])
                    raise _Unresolved(f"parameters refer to each other in a loop: {chain}")
                resolving.append(ref)
                try:
                    resolved[ref] = _bounded(_substitute(node, lookup), f"'${{{ref}}}'")
                finally:
                    resolving.pop()
                return resolved[ref]
            return node
        if ref in INSTANCE_REFERENCES:
            return _KEEP
        known = "params.NAME, env.NAME, " + ", ".join(INSTANCE_REFERENCES)
        raise _Unresolved(f"'${{{ref}}}' is not a known reference (use {known})")

    return lookup


def prepare_document(
    doc: Document,
    overrides: Overrides | None = (),
    environ: Mapping[str, str] | None = None,
    unresolved: list[Diagnostic] | None = None,
) -> Document:
    """Apply overrides (see ``read_override``) and document-wide interpolation; raise
    ``SpecError``. With ``unresolved``, a reference that cannot be resolved (T020) is
    added to it and left as written, so that the document's other problems can still
    be found; a bad override still raises."""
    data = copy.deepcopy(doc.data)
    problems: list[Diagnostic] = []
    for item in override_items(overrides):
        where = _where(item)
        try:
            keys, value = read_override(item)
            problem = None if adds_a_key(item) else override_path_problem(data, keys)
            if problem:
                raise ValueError(f"{where}: {problem}")
            apply_override(data, keys, value, None if isinstance(item, str) else where)
        except (ValueError, IndexError, TypeError, AttributeError) as e:
            said = str(e).startswith(("--set ", "override "))  # names the override already
            msg = str(e) if said else f"{where} cannot be applied: {e}"
            # A problem of the command line: no line of the spec to point at.
            problems.append(Diagnostic(doc.path, 0, 0, "error", "T021", msg))
    if problems:
        raise SpecError(problems)
    params = data.get("params") if isinstance(data.get("params"), dict) else {}
    lookup = _document_lookup(params or {}, os.environ if environ is None else environ)

    def interpolate(text: str, loc: Loc) -> Any:
        try:
            return _bounded(_substitute(text, lookup), "this value")
        except _Unresolved as e:
            problems.append(doc.diagnostic(loc, "T020", str(e)))
            return text

    data = _walk(data, interpolate)
    if problems and unresolved is None:
        raise SpecError(problems)

    # `$${` becomes `${` now, except where build_plan interpolates again per instance.
    def finish(text: str, loc: Loc) -> str:
        if _per_instance(loc):
            return text
        # params may hold templates such as "w${replica}", filled in where they are used
        m = None if loc[:1] == ("params",) else _INSTANCE_REFERENCE.search(text)
        if m:
            sections = ", ".join(PER_INSTANCE_SECTIONS)
            problems.append(
                doc.diagnostic(
                    loc, "T020", f"'{m.group(0)}' has a value only in a process's {sections}"
                )
            )
        return text.replace("$${", "${")

    data = _walk(data, finish)
    if problems and unresolved is None:
        raise SpecError(problems)
    if unresolved is not None:
        unresolved.extend(problems)
    return dataclasses.replace(doc, data=data)


def validated_document(
    doc: Document, overrides: Overrides | None = (), environ: Mapping[str, str] | None = None
) -> tuple[Spec, Document]:
    """The document with its overrides and references applied, and its Spec; raise one
    ``SpecError`` with every problem of both stages (an unresolved reference does not
    hide the schema's findings; the schema's complaint about a value that is such a
    reference says nothing new and is left out)."""
    from topo.spec import spec_from_document

    unresolved: list[Diagnostic] = []
    document = prepare_document(doc, overrides, environ, unresolved=unresolved)
    try:
        spec = spec_from_document(document)
    except SpecError as e:
        taken = {(d.line, d.col) for d in unresolved}
        found = [d for d in e.diagnostics if (d.line, d.col) not in taken]
        raise SpecError([*unresolved, *found]) from None
    if unresolved:
        raise SpecError(unresolved)
    return spec, document


PER_INSTANCE_SECTIONS = ("args", "env", "inputs", "outputs", "uses")
_INSTANCE_REFERENCE = re.compile(r"(?<!\$)\$\{\s*(" + "|".join(INSTANCE_REFERENCES) + r")\s*\}")


def _per_instance(loc: Loc) -> bool:
    return len(loc) > 3 and loc[0] == "processes" and loc[2] in PER_INSTANCE_SECTIONS


# ----- the plan ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Binding:
    """One channel or lock handed to an instance under a parameter name."""

    param: str
    name: str  # the channel or lock
    roles: frozenset[Role]  # input and output together when listed under both
    end: int | None = None  # pipes: 0 receives (or first duplex end), 1 sends

    @property
    def writes(self) -> bool:
        """The instance may send into it (an output, or a use: either way)."""
        return "output" in self.roles or "use" in self.roles

    @property
    def reads(self) -> bool:
        """The instance may receive from it (an input, or a use)."""
        return "input" in self.roles or "use" in self.roles


@dataclass(frozen=True)
class Instance:
    """One process started by the run: ``worker[2]`` is replica 2 of process ``worker``."""

    name: str
    process: str
    replica: int
    replicas: int
    seed: int
    target: str
    args: dict[str, Any]
    env: dict[str, str]
    bindings: tuple[Binding, ...]


@dataclass(frozen=True, eq=False)
class Plan:
    """Everything a backend needs to start the run, with nothing left to interpolate.

    Frozen once built, the dicts inside its spec included (the record writes the spec as
    it was validated); compared (and hashed) by identity, so that what is derived from a
    plan can be kept beside it (``graph.plan_view``) without being part of it.

    ``spec`` is the validated spec made frozen objects (topo/model.py): read like the
    pydantic models, without pydantic's methods (``topo.spec.thawed`` gives one back)."""

    spec: Spec
    document: Document
    name: str
    spec_dir: Path
    seed: int
    instances: list[Instance]
    barrier_parties: dict[str, int] = field(default_factory=dict)
    # the overrides applied, for the record: texts that read_override reads back the same
    overrides: tuple[str, ...] = ()
    # What the checks derive from the plan once and share (the graph, imported targets).
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def params(self) -> dict[str, Any]:
        return self.spec.params

    def instances_of(self, process: str) -> list[Instance]:
        return [i for i in self.instances if i.process == process]

    def context(self, instance: Instance, run_dir: Path | None, attempt: int = 0) -> RunContext:
        """What ``instance``'s target gets as ``ctx``, whatever the backend; ``attempt``
        counts its restarts, each of which draws new random numbers."""
        return RunContext(
            name=instance.name,
            process=instance.process,
            replica=instance.replica,
            replicas=instance.replicas,
            seed=attempt_seed(instance.seed, attempt),
            params=dict(self.params),
            run_dir=str(run_dir) if run_dir else None,
            spec_dir=str(self.spec_dir),
            attempt=attempt,
        )

    def users_of(self, name: str) -> list[tuple[Instance, Binding]]:
        """Every (instance, binding) that binds channel or lock ``name``, in order."""
        return [(i, b) for i in self.instances for b in i.bindings if b.name == name]

    def readers_of(self, name: str) -> list[str]:
        """The instances that may read channel ``name``, sorted."""
        return sorted({i.name for i, b in self.users_of(name) if b.reads})

    def process_of(self, instance: Instance) -> Process:
        return self.spec.processes[instance.process]

    def model(self, name: str) -> Any:
        """The channel or lock model named ``name``, or None."""
        return self.spec.channels.get(name) or self.spec.locks.get(name)

    def declared(self) -> Iterator[tuple[str, str, Any]]:
        """(section, name, model) for every channel and lock."""
        for name, channel in self.spec.channels.items():
            yield "channels", name, channel
        for name, lock in self.spec.locks.items():
            yield "locks", name, lock


def instance_name(process: str, replica: int, replicas: int) -> str:
    return process if replicas == 1 else f"{process}[{replica}]"


def attempt_seed(seed: int, attempt: int) -> int:
    """The seed of an instance's ``attempt``-th restart: its own seed the first time,
    then one derived from it and the attempt, so that a failure caused by a random draw
    does not repeat on every attempt, and the run as a whole stays reproducible."""
    return seed if attempt == 0 else derive_seed(seed, f"attempt {attempt}")


def derive_seed(base: int, instance: str) -> int:
    """A stable 32-bit seed per instance, independent of start order and Python's hash."""
    digest = hashlib.sha256(f"{base}/{instance}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _bindings(
    inputs: dict[str, Any], outputs: dict[str, Any], uses: dict[str, Any]
) -> list[Binding]:
    roles: dict[tuple[str, str], set[Role]] = {}
    for section, role in ((inputs, "input"), (outputs, "output"), (uses, "use")):
        for param, name in section.items():
            roles.setdefault((param, str(name)), set()).add(role)  # type: ignore[arg-type]
    return [Binding(param, name, frozenset(r)) for (param, name), r in roles.items()]


def _assign_pipe_ends(spec: Spec, instances: list[Instance]) -> list[Instance]:
    """Simplex pipes: readers get end 0, writers end 1. Duplex: ends by declaration order."""
    pipes = {name for name, c in spec.channels.items() if isinstance(c, PipeChannel)}
    seen: dict[str, int] = {}
    result = []
    for inst in instances:
        if not any(b.name in pipes for b in inst.bindings):
            result.append(inst)
            continue
        bindings = []
        for b in inst.bindings:
            channel = spec.channels.get(b.name)
            if isinstance(channel, PipeChannel):
                if not channel.duplex:
                    end = 0 if "input" in b.roles else 1
                else:
                    end = min(seen.get(b.name, 0), 1)
                    seen[b.name] = seen.get(b.name, 0) + 1
                b = Binding(b.param, b.name, b.roles, end)
            bindings.append(b)
        result.append(Instance(**{**inst.__dict__, "bindings": tuple(bindings)}))
    return result


def _instance_values(
    values: dict[str, Any],
    refs: dict[str, Any],
    document: Document,
    where: Loc,
    problems: list[Diagnostic],
) -> Any:
    """``values`` with ``${replica}``, ``${replicas}``, ``${name}`` and ``${seed}`` replaced."""
    if not values:  # most sections of most processes: nothing to walk, per instance
        return {}

    def lookup(ref: str) -> Any:
        if ref in refs:
            return refs[ref]
        raise _Unresolved(f"'${{{ref}}}' is not a known reference")  # pragma: no cover

    def interpolate(text: str, loc: Loc) -> Any:
        try:
            return _bounded(_substitute(text, lookup), "this value")
        except _Unresolved as e:
            problems.append(document.diagnostic((*where, *loc), "T020", str(e)))
            return text

    return _unescape(_walk(values, interpolate))


MAX_INSTANCES = 10_000  # in one run, unless $TOPO_MAX_INSTANCES says otherwise
MAX_INSTANCES_ENV = "TOPO_MAX_INSTANCES"


def max_instances() -> int:
    try:
        return int(os.environ.get(MAX_INSTANCES_ENV, MAX_INSTANCES))
    except ValueError:
        return MAX_INSTANCES


def _check_instance_count(spec: Spec, document: Document) -> None:
    """Refuse, before expanding them, more instances than a run may have: a typo such
    as ``replicas: 1000000000`` would otherwise take minutes and gigabytes to validate."""
    limit = max_instances()
    total = sum(p.replicas for p in spec.processes.values())
    if total <= limit:
        return
    largest = max(spec.processes, key=lambda p: spec.processes[p].replicas)
    raise SpecError(
        [
            document.diagnostic(
                ("processes", largest, "replicas"),
                "T011",
                f"{total:,} instances in all are more than the {limit:,} a run may have "
                f"(raise the limit with {MAX_INSTANCES_ENV}=N if you mean it)",
            )
        ]
    )


def build_plan(
    spec: Spec,
    document: Document,
    *,
    seed: int | None = None,
    overrides: Sequence[str] = (),
    spec_dir: str | Path | None = None,
) -> Plan:
    """Expand replicas into instances; interpolate per-instance references.

    ``overrides`` are the ``--set`` texts applied to ``document``, for the record;
    ``spec_dir`` is where targets are imported from (default: the spec file's folder).
    A pydantic ``spec`` is made frozen objects first (see ``Plan``).
    """
    if not isinstance(spec, Frozen):
        from topo.spec import frozen

        spec = frozen(spec)
    _check_instance_count(spec, document)
    base_seed = seed if seed is not None else spec.seed
    if base_seed is None:
        base_seed = secrets.randbits(32)
    problems: list[Diagnostic] = []
    instances: list[Instance] = []
    for pname, process in spec.processes.items():
        for replica in range(process.replicas):
            name = instance_name(pname, replica, process.replicas)
            inst_seed = derive_seed(base_seed, name)
            values = {
                "replica": replica,
                "replicas": process.replicas,
                "name": pname,
                "seed": inst_seed,
            }
            args, env, inputs, outputs, uses = (
                _instance_values(
                    getattr(process, section),
                    values,
                    document,
                    ("processes", pname, section),
                    problems,
                )
                for section in PER_INSTANCE_SECTIONS
            )
            bindings = tuple(_bindings(inputs, outputs, uses))
            instances.append(
                Instance(
                    name,
                    pname,
                    replica,
                    process.replicas,
                    inst_seed,
                    process.target,
                    args,
                    {k: str(v) for k, v in env.items()},
                    bindings,
                )
            )
    if problems:
        raise SpecError(problems)
    instances = _assign_pipe_ends(spec, instances)
    parties = {}
    for name, lock in spec.locks.items():
        if isinstance(lock, BarrierLock):
            users = {inst.name for inst in instances for b in inst.bindings if b.name == name}
            parties[name] = lock.parties or max(len(users), 1)
    return Plan(
        spec,
        document,
        spec.name or run_name_of(str(document.path)),
        Path(spec_dir or Path(document.path).parent).resolve(),
        base_seed,
        instances,
        parties,
        tuple(overrides),
    )


SPEC_DATA = "spec_data"  # Plan.cache: the spec as plain data (model_dump)


def spec_data(spec: Spec) -> dict[str, Any]:
    """The spec as plain data, what differs from the defaults: built by pydantic's
    serializer, whose schema is built on first use (~20 ms)."""
    from topo.spec import thawed

    return thawed(spec).model_dump(mode="json", exclude_defaults=True)


def resolved_spec(plan: Plan) -> dict[str, Any]:
    """The spec with overrides and params applied, as a plain mapping (for run records).
    The spec's plain data comes from ``plan.cache`` when its validation kept it there."""
    if SPEC_DATA not in plan.cache:
        plan.cache[SPEC_DATA] = spec_data(plan.spec)
    data = dict(plan.cache[SPEC_DATA])  # the top level is written below
    data["name"] = plan.name
    data["seed"] = plan.seed
    # Read again, the text must mean the same: a literal `${` is written `$${` (args and
    # env keep their per-instance references and escapes as they are).
    return dict(_walk(data, lambda s, loc: s if _per_instance(loc) else _escape(s)))
