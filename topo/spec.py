"""The spec format as pydantic models: the only place that knows its keys.

Every model forbids unknown keys and is frozen. Channels and locks may be written
as just their kind (``tasks: queue``); ``_short_form`` expands that before the
tagged union picks the model by ``kind``.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from topo import model
from topo.document import Document
from topo.errors import SpecError
from topo.hints import did_you_mean
from topo.model import RUN_NAME

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TARGET = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

# Typecodes that multiprocessing.sharedctypes accepts (see typecode_to_type there).
TYPECODES = frozenset("cubBhHiIlLqQfd")


def _identifier(name: str) -> str:
    if not IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a valid name: use letters, digits and _ only")
    return name


def _run_name(name: str) -> str:
    # The name is a folder of the runs directory: one plain path component, never a way
    # out of it ("../x", "/etc") nor something a file system refuses (NUL, 300 characters).
    if not RUN_NAME.match(name):
        raise ValueError(
            f"{name[:40]!r} cannot name a run folder: use 1 to 100 letters, digits, '_', "
            "'-' and '.', starting with a letter, digit or '_'"
        )
    return name


def _target(value: str) -> str:
    if not TARGET.match(value):
        raise ValueError(f"{value!r} is not of the form module:function")
    return value


def _ctype(value: str) -> str:
    import ctypes

    if value in TYPECODES or (value.startswith("c_") and hasattr(ctypes, value)):
        return value
    raise ValueError(f"{value!r} is not a typecode (such as i, d, c) or a ctypes name (c_double)")


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")


def parse_duration(value: Any) -> Any:
    """``90``, ``1.5``, ``"90s"``, ``"5m"``, ``"250ms"``, ``"1h"`` -> seconds as a float."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '90s' or '5m'")
    if isinstance(value, int | float):
        if value <= 0:
            raise ValueError(f"a duration must be more than 0 seconds, not {value!r}")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m and float(m.group(1)) > 0:
            return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    raise ValueError(f"{value!r} is not a duration: write seconds, or a string like '90s' or '5m'")


_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_BYTES = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)


def parse_bytes(value: Any) -> Any:
    """``1048576``, ``"1MiB"``, ``"64KiB"``, ``"2 GiB"``, ``"1.5GB"`` -> a number of bytes
    (a fraction of a byte is dropped)."""
    if isinstance(value, str):
        m = _BYTES.match(value)
        if not m:
            raise ValueError(
                f"{value!r} is not a size: write bytes, or a string like '64KiB' or '1.5GB'"
            )
        return int(Fraction(m.group(1)) * _BYTE_UNITS[(m.group(2) or "").lower()])
    return value


# Ray counts resources in steps of 0.0001 and refuses a non-zero amount below one step.
RAY_RESOURCE_STEP = 0.0001


def _resource_step(amount: float) -> float:
    if 0 < amount < RAY_RESOURCE_STEP:
        raise ValueError(
            f"{amount!r} is less than {RAY_RESOURCE_STEP}, the smallest amount Ray counts"
        )
    return amount


def _custom_resource(name: str) -> str:
    if not name.strip():
        raise ValueError("a custom resource needs a name")
    if "${" in name:
        raise ValueError(f"{name!r}: a name is a key, and keys are not interpolated")
    if name in ("CPU", "GPU"):
        raise ValueError(f"{name!r} is not a custom resource: ask for it with {name.lower()}s")
    return name


def _node(name: str) -> str:
    if not name.strip():
        raise ValueError("a node is a Ray node's IP address or id, not an empty string")
    return name


Name = Annotated[str, AfterValidator(_identifier)]


def _binding_name(name: str) -> str:
    # A per-instance reference is resolved for each instance; T030 checks the result.
    return name if "${" in name else _identifier(name)


BindingName = Annotated[str, AfterValidator(_binding_name)]
Target = Annotated[str, AfterValidator(_target)]
CType = Annotated[str, AfterValidator(_ctype)]
Duration = Annotated[float, BeforeValidator(parse_duration, json_schema_input_type=float | str)]
# YAML gives ints as ints: `replicas: true` or `maxsize: 2.5` are mistakes, not numbers.
PositiveInt = Annotated[int, Field(strict=True, gt=0)]
NonNegativeInt = Annotated[int, Field(strict=True, ge=0)]
ByteSize = Annotated[
    int, BeforeValidator(parse_bytes, json_schema_input_type=int | str), Field(strict=True, gt=0)
]
# Amounts of a resource: an int or float (`cpus: 2`, `gpus: 0.5`), never a bool or text.
ResourceAmount = Annotated[
    float, Field(strict=True, gt=0, allow_inf_nan=False), AfterValidator(_resource_step)
]
GPUAmount = Annotated[  # none at all is an amount too: `gpus: 0`
    float, Field(strict=True, ge=0, allow_inf_nan=False), AfterValidator(_resource_step)
]
Via = Literal["manager"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Primitive(model.Primitive, Model):
    """Base of every channel and lock model (what it is and implies: topo/model.py)."""


# ----- channels ---------------------------------------------------------------------------


_QueueModel = TypeVar("_QueueModel", bound=Primitive)


def _no_transport_via_manager(queue: _QueueModel) -> _QueueModel:
    """A queue built by the manager is the manager's: it cannot take another transport."""
    transport = getattr(queue, "transport", "auto")
    if getattr(queue, "via", None) == "manager" and transport not in ("auto", "mp", "pipe"):
        raise ValueError(f"transport: {transport} and via: manager cannot go together")
    return queue


class QueueChannel(model.QueueChannel, Primitive):
    kind: Literal["queue"]
    maxsize: NonNegativeInt = 0
    via: Via | None = None
    # How its messages travel (docs/format.md, "Transports"): auto picks from the
    # topology; mp is multiprocessing.Queue (pipe is its old name); socket a
    # SOCK_SEQPACKET socket pair; shm copies bytes and numpy arrays through
    # shared-memory slots instead of pickling them: for big payloads.
    transport: Literal["auto", "mp", "pipe", "socket", "shm"] = "auto"
    slot_size: ByteSize = 1 << 20  # bytes per message, with transport: shm
    slots: PositiveInt | None = None  # messages in flight, with transport: shm (maxsize or 8)

    @model_validator(mode="after")
    def _transport_alone(self) -> QueueChannel:
        return _no_transport_via_manager(self)


class SimpleQueueChannel(model.SimpleQueueChannel, Primitive):
    kind: Literal["simple_queue"]
    transport: Literal["auto", "mp", "pipe", "socket"] = "auto"


class JoinableQueueChannel(model.JoinableQueueChannel, Primitive):
    kind: Literal["joinable_queue"]
    maxsize: NonNegativeInt = 0
    via: Via | None = None
    transport: Literal["auto", "mp", "pipe", "socket"] = "auto"

    @model_validator(mode="after")
    def _transport_alone(self) -> JoinableQueueChannel:
        return _no_transport_via_manager(self)


class PipeChannel(model.PipeChannel, Primitive):
    kind: Literal["pipe"]
    duplex: bool = True


class ValueChannel(model.ValueChannel, Primitive):
    kind: Literal["value"]
    type: CType | None = None  # None: inferred from init (float -> d, int -> q, str -> c)
    init: int | float | str | bool = 0
    lock: bool = True
    via: Via | None = None


class ArrayChannel(model.ArrayChannel, Primitive):
    kind: Literal["array"]
    type: CType | None = None
    size: PositiveInt | None = None
    init: list[int | float | bool] | str | None = None
    lock: bool = True
    via: Via | None = None

    @model_validator(mode="after")
    def _size_or_init(self) -> ArrayChannel:
        if self.size is None and self.init is None:
            raise ValueError("an array needs 'size' or 'init'")
        if self.size is not None and self.init is not None and len(self.init) != self.size:
            raise ValueError(f"'init' has {len(self.init)} items but 'size' is {self.size}")
        return self


class NdarrayChannel(model.NdarrayChannel, Primitive):
    """A numpy array in shared memory, handed to every user as a zero-copy view."""

    kind: Literal["ndarray"]
    shape: list[PositiveInt] | PositiveInt
    dtype: str = "float64"
    init: int | float | bool = 0  # every element starts with this value


class DictChannel(model.DictChannel, Primitive):
    kind: Literal["dict"]
    init: dict[str, Any] = {}


class ListChannel(model.ListChannel, Primitive):
    kind: Literal["list"]
    init: list[Any] = []


class NamespaceChannel(model.NamespaceChannel, Primitive):
    kind: Literal["namespace"]
    init: dict[Name, Any] = {}


class ObjectChannel(model.ObjectChannel, Primitive):
    kind: Literal["object"]
    factory: Target
    args: dict[str, Any] = {}
    methods: list[Name] | None = None


# ----- locks ------------------------------------------------------------------------------


class LockLock(model.LockLock, Primitive):
    kind: Literal["lock"]
    via: Via | None = None


class RLockLock(model.RLockLock, Primitive):
    kind: Literal["rlock"]
    via: Via | None = None


class SemaphoreLock(model.SemaphoreLock, Primitive):
    kind: Literal["semaphore"]
    value: NonNegativeInt = 1
    via: Via | None = None


class BoundedSemaphoreLock(model.BoundedSemaphoreLock, Primitive):
    kind: Literal["bounded_semaphore"]
    value: NonNegativeInt = 1
    via: Via | None = None


class ConditionLock(model.ConditionLock, Primitive):
    kind: Literal["condition"]
    lock: Name | None = None  # a `lock` or `rlock` of this spec; None: a fresh RLock
    via: Via | None = None


class EventLock(model.EventLock, Primitive):
    kind: Literal["event"]
    via: Via | None = None


class BarrierLock(model.BarrierLock, Primitive):
    kind: Literal["barrier"]
    parties: PositiveInt | None = None  # None: the number of instances that use it
    timeout: Duration | None = None
    via: Via | None = None


def _short_form(value: Any) -> Any:
    """``tasks: queue`` means ``tasks: {kind: queue}``."""
    return {"kind": value} if isinstance(value, str) else value


ChannelModel = (
    QueueChannel
    | SimpleQueueChannel
    | JoinableQueueChannel
    | PipeChannel
    | ValueChannel
    | ArrayChannel
    | DictChannel
    | ListChannel
    | NamespaceChannel
    | ObjectChannel
    | NdarrayChannel
)

LockModel = (
    LockLock
    | RLockLock
    | SemaphoreLock
    | BoundedSemaphoreLock
    | ConditionLock
    | EventLock
    | BarrierLock
)
ChannelKind = Literal[
    "queue",
    "simple_queue",
    "joinable_queue",
    "pipe",
    "value",
    "array",
    "dict",
    "list",
    "namespace",
    "object",
    "ndarray",
]
LockKind = Literal[
    "lock", "rlock", "semaphore", "bounded_semaphore", "condition", "event", "barrier"
]
CHANNEL_KINDS: tuple[str, ...] = get_args(ChannelKind)
LOCK_KINDS: tuple[str, ...] = get_args(LockKind)

Channel = Annotated[
    ChannelModel,
    Field(discriminator="kind"),
    BeforeValidator(_short_form, json_schema_input_type=ChannelKind | ChannelModel),
]
Lock = Annotated[
    LockModel,
    Field(discriminator="kind"),
    BeforeValidator(_short_form, json_schema_input_type=LockKind | LockModel),
]


# ----- processes and the whole spec -------------------------------------------------------


def _env_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    return value


class Resources(model.Resources, Model):
    """What each instance of a process asks of the node it runs on, for ``--backend ray``
    (its ``num_cpus``, ``num_gpus``, ``memory`` and ``resources``). None: not asked.

    Locally only ``cpus`` is used, by the oversubscription check T123."""

    cpus: ResourceAmount | None = None
    gpus: GPUAmount | None = None
    memory: ByteSize | None = None  # bytes: an int, or a string like "512MiB" or "2GiB"
    # custom resources of the cluster's nodes, by name: {n0: 1}
    custom: dict[Annotated[str, AfterValidator(_custom_resource)], ResourceAmount] = {}


class Process(model.Process, Model):
    target: Target
    args: dict[Name, Any] = {}
    replicas: PositiveInt = 1
    # Channel and lock names; "q${replica}" gives each instance its own (see docs/format.md).
    inputs: dict[Name, BindingName] = {}
    outputs: dict[Name, BindingName] = {}
    uses: dict[Name, BindingName] = {}
    after: list[Name] = []
    daemon: bool = False
    restart: Literal["never", "on-failure"] = "never"
    max_restarts: NonNegativeInt = 3
    timeout: Duration | None = None
    env: dict[str, Annotated[str, BeforeValidator(_env_value)]] = {}
    ignore: list[str] = []  # diagnostic codes silenced for this process (warnings only)
    # Placement on a Ray cluster (--backend ray); locally only resources.cpus counts (T123).
    resources: Resources | None = None
    node: Annotated[str, AfterValidator(_node)] | None = None  # a Ray node's IP address or id


class Spec(model.Spec, Model):
    topo: Literal[1] = 1
    name: Annotated[str, AfterValidator(_run_name)] | None = None
    description: str | None = None
    start_method: Literal["spawn", "fork", "forkserver"] = "spawn"
    seed: int | None = None
    timeout: Duration | None = None
    params: dict[str, Any] = {}
    channels: dict[Name, Channel] = {}
    locks: dict[Name, Lock] = {}
    processes: Annotated[dict[Name, Process], Field(min_length=1)]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the format, for editors (`topo schema`)."""
    schema = Spec.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "topo spec"
    return schema


# ----- from a loaded document to a Spec, every problem located -----------------------------

CHANNEL_MODELS: dict[str, type[Model]] = {
    get_args(m.model_fields["kind"].annotation)[0]: m for m in get_args(ChannelModel)
}
LOCK_MODELS: dict[str, type[Model]] = {
    get_args(m.model_fields["kind"].annotation)[0]: m for m in get_args(LockModel)
}


def _model_at(loc: tuple[Any, ...]) -> type[Model] | None:
    """The model whose keys are checked at ``loc`` (a pydantic loc, union tags included)."""
    if not loc:
        return Spec
    if loc[0] == "processes" and len(loc) == 2:
        return Process
    if loc[0] == "processes" and len(loc) == 3 and loc[2] == "resources":
        return Resources
    if loc[0] == "channels" and len(loc) == 3:
        return CHANNEL_MODELS.get(str(loc[2]))
    if loc[0] == "locks" and len(loc) == 3:
        return LOCK_MODELS.get(str(loc[2]))
    return None


def _is_tag(node: Any, part: Any) -> bool:
    """Whether ``part`` is the union tag pydantic adds to a loc, not a key of the document."""
    if isinstance(node, str):
        return True  # short form: the tag is the string itself
    return isinstance(node, dict) and part not in node and node.get("kind") == part


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], bool]:
    """Map a pydantic loc onto the document: skip union tags, note dict-key errors."""
    path: list[Any] = []
    node = data
    for part in loc:
        if part == "[key]":
            return tuple(path), True
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            node = node[part]
        elif _is_tag(node, part):
            continue
        else:
            path.append(part)  # a missing or unknown key: the place is the key or its parent
            return tuple(path), True
        path.append(part)
    return tuple(path), False


def _describe(loc: tuple[Any, ...]) -> str:
    """``process 'worker', key 'replicas'`` for a loc (union tags left out)."""
    parts = [str(p) for p in loc if p != "[key]"]
    if len(parts) >= 2 and parts[0] in ("channels", "locks", "processes"):
        what = {"channels": "channel", "locks": "lock", "processes": "process"}[parts[0]]
        kinds = CHANNEL_MODELS if parts[0] == "channels" else LOCK_MODELS
        rest = [p for i, p in enumerate(parts[2:]) if not (i == 0 and p in kinds)]
        return f"{what} {parts[1]!r}" + (f", key {'.'.join(rest)!r}" if rest else "")
    return f"key {'.'.join(parts)!r}" if parts else "the spec"


def _message(error: Any) -> str:
    kind, loc, ctx = error["type"], tuple(error["loc"]), error.get("ctx") or {}
    last = loc[-1] if loc else ""
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        hint = did_you_mean(last, model.model_fields) if model else ""
        where = _describe(loc[:-1])
        return f"unknown key {last!r} in {where}{hint}: topo does not know what to do with it"
    if kind == "missing":
        return f"{_describe(loc[:-1])} needs the key {last!r}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        section = "channel" if loc and loc[0] == "channels" else "lock"
        kinds = CHANNEL_KINDS if section == "channel" else LOCK_KINDS
        if kind == "union_tag_not_found":
            return f"{_describe(loc)} needs a 'kind': one of {', '.join(kinds)}"
        tag = ctx.get("tag")
        hint = did_you_mean(str(tag), kinds)
        return f"unknown {section} kind {tag!r}{hint}: use one of {', '.join(kinds)}"
    if kind == "literal_error":
        return f"{_describe(loc)} is {error.get('input')!r}, but must be {ctx.get('expected')}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        hint = " with at least a 'target'" if len(loc) == 2 and loc[0] == "processes" else ""
        return f"{_describe(loc)} must be a mapping of keys{hint}, not {error.get('input')!r}"
    text = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "value_error":
        return f"{_describe(loc)}: {text}"
    return f"{_describe(loc)}: {text[:1].lower()}{text[1:]} (got {error.get('input')!r})"


def spec_from_document(doc: Document) -> Spec:
    """Validate a loaded document; raise ``SpecError`` with every problem, located."""
    from pydantic import ValidationError

    # Top-level `x-...` keys hold YAML anchors for merging, as in docker compose files.
    data = {k: v for k, v in doc.data.items() if not str(k).startswith("x-")}
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        diagnostics = []
        for error in e.errors(include_url=False):
            loc = tuple(error["loc"])
            if error["type"] == "literal_error" and len(loc) == 3 and loc[2] == "kind":
                continue  # reported through union_tag_invalid already
            path, at_key = _data_path(doc.data, loc)
            at_key = at_key or error["type"] == "extra_forbidden"
            code = {"extra_forbidden": "T010", "missing": "T012"}.get(error["type"], "T011")
            diagnostics.append(doc.diagnostic(path, code, _message(error), key=at_key))
        raise SpecError(diagnostics) from None


# ----- frozen: what a run reads (topo/model.py) ------------------------------------------


def frozen(value: Any) -> Any:
    """``value`` with every model in it, however deep, made a frozen object of its shape:
    the same values, read the same way, without pydantic."""
    if isinstance(value, Model):  # topo's own: any other object is a value as it is
        shape = next(c for c in type(value).__mro__ if c in model.FROZEN)
        fields = type(value).model_fields
        return model.FROZEN[shape]({name: frozen(getattr(value, name)) for name in fields})
    if isinstance(value, dict):
        return {k: frozen(v) for k, v in value.items()}
    if isinstance(value, list):
        return [frozen(v) for v in value]
    return value


def thawed(spec: model.Spec) -> Spec:
    """A frozen spec as a pydantic one again (its values validate as they did)."""
    return spec if isinstance(spec, Spec) else Spec.model_validate(model.plain(spec))
