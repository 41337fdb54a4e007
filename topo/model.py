"""What a validated spec is, without pydantic: the shapes a run reads.

topo/spec.py validates a document into pydantic models. Each of those models is one
of the shapes below (what a kind of channel or lock is, its derived properties) plus
its fields and validators. ``frozen(spec)`` turns a validated spec into plain,
read-only objects of the same shapes; the Plan holds those. A run of a spec validated
before unpickles them from the cache without importing pydantic (~55 ms, and a smaller
process to fork each instance from). Code that reads a spec tests ``isinstance``
against these shapes, which the pydantic models and the frozen objects both are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

CHANNEL_KINDS = (
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
)
LOCK_KINDS = ("lock", "rlock", "semaphore", "bounded_semaphore", "condition", "event", "barrier")

RUN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


def run_name_of(path: str) -> str:
    """The run name a spec file gives when it has no ``name``: its stem, made safe."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.rsplit("/", 1)[-1].rsplit(".", 1)[0])[:100]
    return stem if RUN_NAME.match(stem) else f"_{stem}"[:100]


class Traits(NamedTuple):
    """What a kind of channel or lock is and implies, declared once on its shape."""

    messages: bool = False  # carries messages from writers to readers (queues, pipes)
    queue: bool = False  # a queue: put/get, flushed by a feeder thread at exit
    bounded_by_os: bool = False  # no maxsize: the OS pipe buffer is its only bound
    manager: bool = False  # always lives in the run's manager process
    held: bool = False  # taken and given back (acquire/release, a barrier's party)
    owned: bool = False  # has one owner while held, whose death leaves it held for ever
    state: bool = False  # its final contents are read back into the run's result
    # The calls that can wait for ever (without a timeout), watched by the deadlock detector.
    blocking: tuple[str, ...] = ()


class Shape:
    """Base of every shape (no state of its own: the model or frozen object has it)."""

    __slots__ = ()


class Primitive(Shape):
    """Base of every channel and lock."""

    __slots__ = ()
    traits: ClassVar[Traits] = Traits()
    if TYPE_CHECKING:
        kind: str

    @property
    def via_manager(self) -> bool:
        """Built in the run's manager process: manager kinds, and ``via: manager``."""
        return self.traits.manager or getattr(self, "via", None) == "manager"

    @property
    def waits_by_itself(self) -> bool:
        """Its waits end by themselves (a barrier with a timeout): never a deadlock."""
        return getattr(self, "timeout", None) is not None

    @property
    def watched(self) -> bool:
        """Watched by the deadlock detector: it has calls that can wait for ever."""
        return bool(self.traits.blocking) and not self.waits_by_itself


# ----- channels ---------------------------------------------------------------------------


class QueueChannel(Primitive):
    __slots__ = ()
    traits = Traits(messages=True, queue=True, blocking=("get", "put"))
    if TYPE_CHECKING:
        maxsize: int
        via: str | None
        transport: str
        slot_size: int
        slots: int | None

    @property
    def capacity(self) -> int:
        """Slots of a shared-memory queue."""
        return self.slots or self.maxsize or 8

    @property
    def shared_bytes(self) -> int | None:
        """Its size in shared memory (with transport: shm), else 0."""
        return self.capacity * self.slot_size if self.transport == "shm" else 0


class SimpleQueueChannel(Primitive):
    __slots__ = ()
    traits = Traits(messages=True, queue=True, bounded_by_os=True, blocking=("get", "put"))
    if TYPE_CHECKING:
        transport: str


class JoinableQueueChannel(Primitive):
    __slots__ = ()
    traits = Traits(messages=True, queue=True, blocking=("get", "put", "join"))
    if TYPE_CHECKING:
        maxsize: int
        via: str | None
        transport: str


class PipeChannel(Primitive):
    __slots__ = ()
    traits = Traits(messages=True, bounded_by_os=True, blocking=("recv", "send", "poll"))
    if TYPE_CHECKING:
        duplex: bool


def _default_typecode(init: Any) -> str:
    if isinstance(init, float):
        return "d"
    if isinstance(init, str | bytes):
        return "c"
    return "q"


class ValueChannel(Primitive):
    __slots__ = ()
    traits = Traits(state=True)
    if TYPE_CHECKING:
        type: str | None
        init: int | float | str | bool
        lock: bool
        via: str | None

    @property
    def typecode(self) -> str:
        return self.type or _default_typecode(self.init)


class ArrayChannel(Primitive):
    __slots__ = ()
    traits = Traits(state=True)
    if TYPE_CHECKING:
        type: str | None
        size: int | None
        init: list[int | float | bool] | str | None
        lock: bool
        via: str | None

    @property
    def typecode(self) -> str:
        if self.type:
            return self.type
        return _default_typecode(self.init[0] if self.init else 0)

    @property
    def length(self) -> int:
        return self.size if self.size is not None else len(self.init or [])


class NdarrayChannel(Primitive):
    """A numpy array in shared memory, handed to every user as a zero-copy view."""

    __slots__ = ()
    traits = Traits(state=True)
    if TYPE_CHECKING:
        shape: list[int] | int
        dtype: str
        init: int | float | bool

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(self.shape) if isinstance(self.shape, list) else (self.shape,)

    @property
    def shared_bytes(self) -> int | None:
        """Its size in shared memory; None when numpy cannot tell the dtype's size."""
        try:
            import numpy as np

            itemsize = np.dtype(self.dtype).itemsize
        except (ImportError, TypeError):
            return None
        size = itemsize
        for d in self.dims:
            size *= d
        return size


class DictChannel(Primitive):
    __slots__ = ()
    traits = Traits(manager=True, state=True)
    if TYPE_CHECKING:
        init: dict[str, Any]


class ListChannel(Primitive):
    __slots__ = ()
    traits = Traits(manager=True, state=True)
    if TYPE_CHECKING:
        init: list[Any]


class NamespaceChannel(Primitive):
    __slots__ = ()
    traits = Traits(manager=True, state=True)
    if TYPE_CHECKING:
        init: dict[str, Any]


class ObjectChannel(Primitive):
    __slots__ = ()
    traits = Traits(manager=True)
    if TYPE_CHECKING:
        factory: str
        args: dict[str, Any]
        methods: list[str] | None


# ----- locks ------------------------------------------------------------------------------


class LockLock(Primitive):
    __slots__ = ()
    traits = Traits(held=True, owned=True, blocking=("acquire",))
    if TYPE_CHECKING:
        via: str | None


class RLockLock(Primitive):
    __slots__ = ()
    traits = Traits(held=True, owned=True, blocking=("acquire",))
    if TYPE_CHECKING:
        via: str | None


class SemaphoreLock(Primitive):
    __slots__ = ()
    traits = Traits(held=True, blocking=("acquire",))
    if TYPE_CHECKING:
        value: int
        via: str | None


class BoundedSemaphoreLock(Primitive):
    __slots__ = ()
    traits = Traits(held=True, blocking=("acquire",))
    if TYPE_CHECKING:
        value: int
        via: str | None


class ConditionLock(Primitive):
    __slots__ = ()
    traits = Traits(held=True, owned=True, blocking=("acquire", "wait", "wait_for"))
    if TYPE_CHECKING:
        lock: str | None
        via: str | None


class EventLock(Primitive):
    __slots__ = ()
    traits = Traits(blocking=("wait",))
    if TYPE_CHECKING:
        via: str | None


class BarrierLock(Primitive):
    __slots__ = ()
    traits = Traits(held=True, blocking=("wait",))
    if TYPE_CHECKING:
        parties: int | None
        timeout: float | None
        via: str | None


# ----- processes and the whole spec -------------------------------------------------------


class Resources(Shape):
    __slots__ = ()
    if TYPE_CHECKING:
        cpus: float | None
        gpus: float | None
        memory: int | None
        custom: dict[str, float]


class Process(Shape):
    __slots__ = ()
    if TYPE_CHECKING:
        target: str
        args: dict[str, Any]
        replicas: int
        inputs: dict[str, str]
        outputs: dict[str, str]
        uses: dict[str, str]
        after: list[str]
        daemon: bool
        restart: str
        max_restarts: int
        timeout: float | None
        env: dict[str, str]
        ignore: list[str]
        resources: Resources | None
        node: str | None

    @property
    def cpus(self) -> float | None:
        """The CPUs each instance asks for (``resources.cpus``), None when it does not say."""
        return self.resources.cpus if self.resources else None


class Spec(Shape):
    __slots__ = ()
    if TYPE_CHECKING:
        topo: int
        name: str | None
        description: str | None
        start_method: str
        seed: int | None
        timeout: float | None
        params: dict[str, Any]
        channels: Mapping[str, Primitive]
        locks: Mapping[str, Primitive]
        processes: Mapping[str, Process]


# ----- frozen: a validated spec as plain objects ------------------------------------------


class Frozen:
    """A validated model's values as read-only attributes, equal to another of the same
    shape and values. Its dicts and lists are the spec's own, as a frozen pydantic
    model's are: nothing changes them (see ``topo.resolve.Plan``), and an object that
    holds one cannot be hashed."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: {name!r} cannot be set")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: {name!r} cannot be deleted")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return other.__dict__ == self.__dict__

    def __hash__(self) -> int:
        return hash((type(self), *self.__dict__.values()))

    def __repr__(self) -> str:
        values = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({values})"


# One frozen class per shape that has values, found by the shape's name (pickled by name:
# renaming one makes the cache's older entries misses, nothing worse).
class FrozenQueueChannel(QueueChannel, Frozen): ...


class FrozenSimpleQueueChannel(SimpleQueueChannel, Frozen): ...


class FrozenJoinableQueueChannel(JoinableQueueChannel, Frozen): ...


class FrozenPipeChannel(PipeChannel, Frozen): ...


class FrozenValueChannel(ValueChannel, Frozen): ...


class FrozenArrayChannel(ArrayChannel, Frozen): ...


class FrozenNdarrayChannel(NdarrayChannel, Frozen): ...


class FrozenDictChannel(DictChannel, Frozen): ...


class FrozenListChannel(ListChannel, Frozen): ...


class FrozenNamespaceChannel(NamespaceChannel, Frozen): ...


class FrozenObjectChannel(ObjectChannel, Frozen): ...


class FrozenLockLock(LockLock, Frozen): ...


class FrozenRLockLock(RLockLock, Frozen): ...


class FrozenSemaphoreLock(SemaphoreLock, Frozen): ...


class FrozenBoundedSemaphoreLock(BoundedSemaphoreLock, Frozen): ...


class FrozenConditionLock(ConditionLock, Frozen): ...


class FrozenEventLock(EventLock, Frozen): ...


class FrozenBarrierLock(BarrierLock, Frozen): ...


class FrozenResources(Resources, Frozen): ...


class FrozenProcess(Process, Frozen): ...


class FrozenSpec(Spec, Frozen): ...


# Each frozen class's first base is its shape.
FROZEN: dict[type[Shape], type[Frozen]] = {
    shape: frozen
    for frozen in Frozen.__subclasses__()
    for shape in frozen.__mro__[1:2]
    if issubclass(frozen, Shape)
}


def plain(value: Any) -> Any:
    """``value`` with every frozen object in it made a plain dict of its values."""
    if isinstance(value, Frozen):
        return {k: plain(v) for k, v in value.__dict__.items()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
