"""The Ray launcher: instances as Ray tasks, channels and locks in the run's hub.

``open`` connects to Ray (a local Ray started for the run, or the cluster at
``address``), reserves one placement group bundle per instance (failing at once when
the cluster cannot hold the run, where Ray would wait for ever), and creates the hub
actor and one actor per ``object`` channel. Each instance is a task with
``max_retries=0`` in a fresh worker process (``max_calls=1``); ``terminate`` is a soft
``ray.cancel`` (KeyboardInterrupt in the target), ``kill`` a forced one. ``close``
kills every actor and task of the run, removes the placement group, and stops the
local Ray if it started one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from topo.backends.guardian import MARK, Guardian, descendants
from topo.backends.ray import proxies
from topo.backends.ray.hub import Hub
from topo.backends.ray.task import run_instance
from topo.deadlock import Wait
from topo.errors import PlacementError, RunError
from topo.jsonable import to_jsonable
from topo.resolve import Instance, Plan
from topo.result import RawItem
from topo.supervise import (
    Event,
    Exited,
    OutputSink,
    Raised,
    Returned,
    RunOptions,
    StartFailed,
)

PLACEMENT_WAIT_S = 30.0  # the cluster has this long to find room for the run
LINES_EVERY_S = 0.05  # how often the launcher collects what instances printed
MOST_DRAINED = 100_000  # per channel
DEFAULT_CPUS = 0.01  # an instance's share of a CPU when its process declares no cpus
# A local Ray for the run: its object store is capped (Ray's default is 30% of RAM, and
# a container's /dev/shm is often 64 MB).
LOCAL_OBJECT_STORE = 256 * 1024 * 1024


def _zero(typecode: str) -> Any:
    if typecode in ("c", "c_char"):
        return b"\x00"
    if typecode in ("f", "d", "c_float", "c_double"):
        return 0.0
    return 0


def _declared(plan: Plan) -> dict[str, dict[str, Any]]:
    """Every channel and lock the hub holds, as plain data."""
    out: dict[str, dict[str, Any]] = {}
    c: Any
    for name, c in plan.spec.channels.items():
        kind = c.kind
        if kind in ("ndarray", "object"):
            continue  # real shared memory, or an actor of its own
        opts: dict[str, Any] = {"kind": kind}
        if kind in ("queue", "joinable_queue"):
            opts["maxsize"] = c.capacity if getattr(c, "transport", "") == "shm" else c.maxsize
        elif kind == "pipe":
            opts["duplex"] = c.duplex
        elif kind == "value":
            init = c.init
            if c.typecode in ("c", "c_char") and isinstance(init, str):
                init = init.encode()
            opts["init"] = init
        elif kind == "array":
            if c.init is None:
                opts["init"] = [_zero(c.typecode)] * c.length
            elif isinstance(c.init, str):
                opts["init"] = bytearray(c.init.encode())
            else:
                opts["init"] = list(c.init)
            if c.typecode in ("c", "c_char") and isinstance(opts["init"], list):
                opts["init"] = bytearray(len(opts["init"]))
        elif kind in ("dict", "list", "namespace"):
            opts["init"] = c.init
        out[name] = opts
    lock: Any
    for name, lock in plan.spec.locks.items():
        opts = {"kind": lock.kind}
        if lock.kind in ("semaphore", "bounded_semaphore"):
            opts["value"] = lock.value
        elif lock.kind == "condition":
            opts["lock"] = lock.lock
        elif lock.kind == "barrier":
            opts["parties"] = plan.barrier_parties[name]
            opts["timeout"] = lock.timeout
        out[name] = opts
    return out


class _ObjectHost:
    """A ``kind: object`` channel's object, in an actor of its own."""

    def __init__(self, factory: str, spec_dir: str, args: dict[str, Any]) -> None:
        from topo.targets import load_target

        self.obj = load_target(factory, spec_dir)(**args)

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return getattr(self.obj, method)(*args, **kwargs)


class RayLauncher:
    def __init__(self, plan: Plan, options: RunOptions, address: str | None) -> None:
        self.plan = plan
        self.options = options
        self.address = address
        self.own_ray = False  # this launcher started the local Ray: it stops it
        self.hub: Any = None
        self.guardian: Guardian | None = None
        self.hub_lost = False
        self.hub_name = f"topo-{uuid.uuid4().hex[:12]}"  # its actors are found by name
        self.objects: dict[str, Any] = {}  # object channel -> its actor
        self.arrays: dict[str, tuple[Any, Any]] = {}  # ndarray -> (handle, segment)
        self.group: Any = None  # the placement group
        self.bundle: dict[str, int] = {}  # instance -> its bundle's index
        self.bundles: dict[str, dict[str, float]] = {}  # instance -> what it asks for
        self.refs: dict[str, Any] = {}  # running instance -> its task's ObjectRef
        self.stopping: dict[str, int] = {}  # instance -> the signal it was stopped by
        self.facts: dict[str, dict[str, Any]] = {}  # instance -> pid, node
        self.output: OutputSink = lambda name, line: None
        self.lines_at = 0.0
        self.ray_printer: Any = None  # Ray's own, while ours is in its place
        self.cluster: dict[str, Any] | None = None  # filled in at close, for the record
        # Channel -> how many instances read it: a lone reader takes items in batches.
        self.readers: dict[str, int] = {}
        for inst in plan.instances:
            for b in inst.bindings:
                if b.reads:
                    self.readers[b.name] = self.readers.get(b.name, 0) + 1
        # Wrapped once: each ray.remote() of a function exports it to the cluster again.
        self.task = ray.remote(max_retries=0, max_calls=1)(run_instance)

    # ----- open --------------------------------------------------------------------------

    def open(self, output: OutputSink) -> None:
        self.output = output
        # Forked first, holding nothing of Ray: if topo is killed, it stops the local
        # Ray topo started (every process of it carries the mark, agents included) and
        # marks the record; on a cluster, Ray ends the tasks and actors of a lost driver.
        self.guardian = Guardian()
        if self.options.run_dir is not None:
            self.guardian.record(self.options.run_dir)
        self._connect()
        self._place()
        self.hub = (
            ray.remote(Hub)
            .options(
                **self._actor_options(self.hub_name),
                max_concurrency=10_000,
                # On the head node: lost only with the whole cluster.
                resources={"node:__internal_head__": 0.001},
            )
            .remote(_declared(self.plan))
        )
        c: Any
        for name, c in self.plan.spec.channels.items():
            if c.kind == "object":
                host = ray.remote(_ObjectHost).options(
                    **self._actor_options(self._object_name(name)), max_concurrency=16
                )
                self.objects[name] = host.remote(c.factory, str(self.plan.spec_dir), c.args)
            elif c.kind == "ndarray":
                from topo.backends.local.shm import SharedArray

                self.arrays[name] = SharedArray.create(c.dims, c.dtype, c.init)
                if self.guardian is not None:
                    self.guardian.segment(self.arrays[name][0].name.lstrip("/"))
        try:  # an object's constructor that fails, a hub that cannot start: fail here
            ray.get(
                [
                    self.hub.facts.remote(),
                    *(a.__ray_ready__.remote() for a in self.objects.values()),
                ]
            )
        except ray.exceptions.RayError as e:
            raise RunError(f"building the run's channels on Ray failed: {_reason(e)}") from e

    def _ask(self, call: str, *args: Any, default: Any = None) -> Any:
        """The hub's answer to ``call(*args)``, or ``default`` once the hub is lost (its
        node died): that is said once, the instances using channels fail by themselves,
        and stopping them and closing go on without it."""
        if self.hub is None or self.hub_lost:
            return default
        try:
            return ray.get(getattr(self.hub, call).remote(*args))
        except ray.exceptions.RayError as e:
            self.hub_lost = True
            self.output("", f"the run's channels and locks on Ray were lost: {_reason(e)}")
            return default

    def _actor_options(self, name: str) -> dict[str, Any]:
        return {"name": name, "namespace": proxies.NAMESPACE, "num_cpus": 0, "max_restarts": 0}

    def _object_name(self, channel: str) -> str:
        return f"{self.hub_name}-{channel}"

    def _connect(self) -> None:
        if ray.is_initialized():
            return  # the caller's own Ray (the Python API): used as it is, left running
        # No runtime_env: the task puts the spec's folder on sys.path itself (see
        # task.py), and workers of the default environment are already started.
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.ERROR,
            "configure_logging": True,
            "namespace": "topo",
        }
        if self.address is None:
            kwargs["num_cpus"] = os.cpu_count() or 1
            kwargs["object_store_memory"] = LOCAL_OBJECT_STORE
            token = uuid.uuid4().hex
            os.environ[MARK] = token  # inherited by every process of the local Ray
            assert self.guardian is not None
            self.guardian.marked(token)
        if self.address is not None:
            _token_auth_like_auto()
        # Ray's driver installs its own SIGTERM handler (it aborts): the supervisor's
        # handlers are put back once it has started.
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            ray.init(address=self.address or "local", **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = "a local Ray" if self.address is None else f"Ray at {self.address}"
            raise RunError(f"could not start or reach {where}: {_reason(e)}") from e
        finally:
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)
        self.own_ray = self.address is None
        if self.own_ray and self.guardian is not None:
            # Ray's own processes, as they are now: its agents leave the mark behind
            # (they set their title over their environment) and outlive a killed topo.
            for pid, started in descendants(os.getpid()):
                if pid != self.guardian.pid:
                    self.guardian.process(pid, started)
        self._quiet_stdout()

    def _quiet_stdout(self) -> None:
        """Ray's driver prints the cluster's error messages ("A worker died...") on
        stdout, where --json puts its document: they go to topo's own lines instead."""
        from ray._private import worker

        self.ray_printer = worker.print_to_stdstream

        def to_topo(data: dict[str, Any], ignore_prefix: bool) -> None:
            for line in data.get("lines", []):
                self.output("", f"ray: {line}")

        worker.print_to_stdstream = to_topo

    def _place(self) -> None:
        """One bundle per instance, in one placement group: Ray would keep a task that
        does not fit waiting for ever; this fails at once, saying what is missing."""
        here = ray.util.get_node_ip_address()
        # A node named by its id (hex) is asked for by its address, Ray's "node:<ip>".
        ips = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
        self.bundles = {i.name: _bundle(self.plan, i, here, ips) for i in self.plan.instances}
        bundles = list(self.bundles.values())
        wanted: dict[str, float] = {}
        for b in bundles:
            for key, amount in b.items():
                wanted[key] = wanted.get(key, 0.0) + amount
        have = ray.cluster_resources()
        for key, amount in wanted.items():
            if amount > have.get(key, 0.0) + 1e-9:
                raise PlacementError(_missing(key, amount, have.get(key, 0.0)))
        self.group = placement_group(bundles, strategy="PACK", name="")
        if not self.group.wait(PLACEMENT_WAIT_S):
            free = ray.available_resources()
            short = [k for k, v in wanted.items() if v > free.get(k, 0.0) + 1e-9]
            detail = "; ".join(_missing(k, wanted[k], free.get(k, 0.0), "free") for k in short)
            raise PlacementError(
                f"the cluster found no room for the run in {PLACEMENT_WAIT_S:.0f} s"
                + (f": {detail}" if detail else "")
            )
        self.bundle = {inst.name: i for i, inst in enumerate(self.plan.instances)}

    # ----- instances ---------------------------------------------------------------------

    def _bind(self, instance: Instance) -> dict[str, Any]:
        bound: dict[str, Any] = {}
        for b in instance.bindings:
            model: Any = self.plan.model(b.name)
            kind = model.kind
            if kind in ("queue", "joinable_queue", "simple_queue"):
                maxsize = getattr(model, "maxsize", 0)
                if kind == "queue" and model.transport == "shm":
                    maxsize = model.capacity
                bound[b.param] = proxies.Queue(
                    self.hub_name,
                    b.name,
                    maxsize,
                    joinable=kind == "joinable_queue",
                    readers=max(1, self.readers.get(b.name, 1)),
                )
            elif kind == "pipe":
                end = b.end if b.end is not None else 0
                duplex = model.duplex
                bound[b.param] = proxies.PipeEnd(
                    self.hub_name,
                    b.name,
                    end,
                    readable=duplex or end == 0,
                    writable=duplex or end == 1,
                )
            elif kind == "value":
                bound[b.param] = proxies.Value(self.hub_name, b.name)
            elif kind == "array":
                bound[b.param] = proxies.Array(self.hub_name, b.name)
            elif kind == "dict":
                bound[b.param] = proxies.Dict(self.hub_name, b.name)
            elif kind == "list":
                bound[b.param] = proxies.List(self.hub_name, b.name)
            elif kind == "namespace":
                bound[b.param] = proxies.Namespace(self.hub_name, b.name)
            elif kind == "object":
                bound[b.param] = proxies.ObjectProxy(
                    self._object_name(b.name), b.name, model.methods
                )
            elif kind == "ndarray":
                bound[b.param] = self.arrays[b.name][0]
            elif kind in ("lock", "rlock", "semaphore", "bounded_semaphore"):
                bound[b.param] = proxies.Lock(self.hub_name, b.name, kind)
            elif kind == "condition":
                lock = model.lock or f"{b.name}:lock"
                lock_kind = self.plan.spec.locks[model.lock].kind if model.lock else "rlock"
                bound[b.param] = proxies.Condition(
                    self.hub_name, b.name, proxies.Lock(self.hub_name, lock, lock_kind)
                )
            elif kind == "event":
                bound[b.param] = proxies.Event(self.hub_name, b.name)
            elif kind == "barrier":
                bound[b.param] = proxies.Barrier(self.hub_name, b.name)
            else:  # pragma: no cover - the capabilities refuse it first
                raise RunError(f"the ray backend cannot bind a {kind}")
        return bound

    def start_many(self, starts: Sequence[tuple[Instance, int]]) -> list[int | None]:
        pids: list[int | None] = []
        for instance, attempt in starts:
            try:
                pids.append(self._start(instance, attempt))
            except BaseException as e:  # a signal's KeyboardInterrupt too
                raise StartFailed(pids, e) from e
        return pids

    def _start(self, instance: Instance, attempt: int) -> int | None:
        for b in instance.bindings:  # a restarted instance has its pipe ends again
            if self.plan.model(b.name).kind == "pipe":
                self._ask("open_end", b.name, b.end if b.end is not None else 0)
        context = self.plan.context(instance, self.options.run_dir, attempt)
        bundle = self.bundles[instance.name]
        task = self.task.options(
            name=f"topo:{instance.name}",
            num_cpus=bundle.get("CPU", 0),
            num_gpus=bundle.get("GPU", 0),
            memory=bundle.get("memory"),
            resources={k: v for k, v in bundle.items() if k not in ("CPU", "GPU", "memory")},
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                self.group, placement_group_bundle_index=self.bundle[instance.name]
            ),
        )
        self.refs[instance.name] = task.remote(
            self.hub,
            instance.name,
            instance.target,
            instance.args,
            instance.env,
            context,
            self._bind(instance),
            os.getcwd(),
        )
        self.stopping.pop(instance.name, None)
        return None

    def wait(self, timeout: float) -> list[Event]:
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if now - self.lines_at >= LINES_EVERY_S:
                self._pump_lines()
            refs = list(self.refs.values())
            left = max(0.0, min(deadline - now, LINES_EVERY_S))
            if not refs:
                time.sleep(left)
                ready: list[Any] = []
            else:
                ready, _ = ray.wait(refs, num_returns=1, timeout=left)
            if ready:
                self._pump_lines()  # what it printed comes before its exit
                events: list[Event] = []
                for name in [n for n, r in self.refs.items() if r in ready]:
                    events.extend(self._ended(name, self.refs.pop(name)))
                return events
            if time.monotonic() >= deadline:
                return []

    def _ended(self, name: str, ref: Any) -> list[Event]:
        self._ask("forget", name)
        self._close_ends(name)
        try:
            kind, payload, code = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return [Exited(name, -self.stopping.get(name, 15))]
        except ray.exceptions.RayTaskError as e:  # raised outside the target (its arguments)
            text = f"{name} could not start on Ray: {_reason(e)}\n"
            self.output(name, text.rstrip())
            return [Raised(name, text), Exited(name, 1)]
        except ray.exceptions.RayError as e:
            if name in self.stopping:
                return [Exited(name, -self.stopping[name])]
            where = self._where(name)
            text = f"the Ray worker running {name}{where} was lost: {_reason(e)}\n"
            self.output(name, text.rstrip())
            return [Raised(name, text), Exited(name, -9)]
        if kind == "returned":
            return [Returned(name, payload), Exited(name, code)]
        if kind == "raised":
            return [Raised(name, payload), Exited(name, code)]
        return [Exited(name, code)]

    def _where(self, name: str) -> str:
        """`` on node 10.0.0.7``: where the instance said it ran, else where its bundle
        of the placement group is (a worker killed at once never said)."""
        self._learn()
        node = self.facts.get(name, {}).get("node")
        if not node and self.group is not None:
            with contextlib.suppress(Exception):
                table = ray.util.placement_group_table(self.group)
                node_id = table["bundles_to_node_id"][self.bundle[name]]
                node = next(n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id)
        return f" on node {node}" if node else ""

    def _close_ends(self, name: str) -> None:
        """An instance that ended has closed its pipe ends (a process's descriptors
        close when it exits): their other ends see EOFError."""
        inst = next(i for i in self.plan.instances if i.name == name)
        for b in inst.bindings:
            if self.plan.model(b.name).kind == "pipe":
                self._ask("close_end", b.name, b.end if b.end is not None else 0)

    def _pump_lines(self) -> None:
        self.lines_at = time.monotonic()
        if self.hub is None:
            return
        for name, line in self._ask("take_lines", default=[]):
            self.output(name, line)

    def _learn(self) -> None:
        if self.hub is not None:
            self.facts.update(self._ask("facts", default={}))

    def terminate(self, name: str) -> None:
        ref = self.refs.get(name)
        if ref is not None:
            self.stopping.setdefault(name, 15)
            ray.cancel(ref)

    def kill(self, name: str) -> None:
        ref = self.refs.get(name)
        if ref is not None:
            self.stopping[name] = 9
            ray.cancel(ref, force=True)

    # ----- what the supervisor asks while it runs ---------------------------------------

    def waits(self) -> dict[str, Wait]:
        if self.hub is None:
            return {}
        waiting = self._ask("waits", default={})
        return {who: Wait(op, name) for who, (op, name) in waiting.items() if who in self.refs}

    def holders(self) -> dict[str, str]:
        return dict(self._ask("holders", default={}))

    def progress(self) -> float:
        return float(self._ask("progress", default=float("nan")))

    def depths(self) -> dict[str, int]:
        return dict(self._ask("depths", default={}))

    def cpu_seconds(self, name: str) -> float | None:
        return None

    def dump_stacks(self) -> None:
        pass

    def pid(self, name: str) -> int | None:
        self._learn()
        pid = self.facts.get(name, {}).get("pid")
        return int(pid) if pid else None

    def _describe(self) -> None:
        """For the run record: Ray's version, the cluster, the node of each instance."""
        self._learn()
        self.cluster = {
            "ray_version": ray.__version__,
            "address": self.address or "local",
            "nodes": {
                name: {"ip": facts.get("node"), "node_id": facts.get("node_id")}
                for name, facts in sorted(self.facts.items())
            },
        }

    # ----- the end -----------------------------------------------------------------------

    def drain(self) -> dict[str, list[Any]]:
        if self.hub is None:
            return {}
        left = self._ask("drain", MOST_DRAINED, default={})
        return {name: [_unpickled(data) for data in items] for name, items in left.items()}

    def read_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.hub is not None:
            snapshot = self._ask("snapshot", default={})
            for name, value in snapshot.items():
                kind = self.plan.spec.channels[name].kind
                if kind == "namespace":
                    value = dict(value or {})
                if isinstance(value, bytearray):
                    value = bytes(value)
                state[name] = to_jsonable(value)
        for name, (handle, segment) in self.arrays.items():
            from topo.backends.local.shm import read_array

            state[name] = read_array(handle, segment)
        return {name: state[name] for name in self.plan.spec.channels if name in state}

    def close(self) -> None:
        # Every step, whatever the others did: a lost hub must not keep the rest alive.
        if ray.is_initialized():
            self._pump_lines()
            if self.hub is not None:
                self._describe()
            for ref in self.refs.values():
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            for actor in [self.hub, *self.objects.values()]:
                if actor is not None:
                    with contextlib.suppress(Exception):
                        ray.kill(actor)
            if self.group is not None:
                with contextlib.suppress(Exception):
                    remove_placement_group(self.group)
        from topo.backends.local.shm import free

        for _, segment in self.arrays.values():
            free(segment)
        self.arrays.clear()
        self.hub = None
        if self.own_ray:
            ray.shutdown()
            self.own_ray = False
        os.environ.pop(MARK, None)
        if self.guardian is not None:
            self.guardian.done()
            self.guardian = None
        if self.ray_printer is not None:
            from ray._private import worker

            worker.print_to_stdstream = self.ray_printer
            self.ray_printer = None


def _token_auth_like_auto() -> None:
    """Send the cluster's token when there is one, as ``ray.init("auto")`` does and an
    explicit address does not (Ray 2.5x enables token authentication on new clusters)."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication import authentication_token_setup as setup
    except ImportError:  # a Ray without token authentication
        return
    quiet = logging.getLogger(setup.__name__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    except Exception:  # the private API changed: connect as Ray would by itself
        pass
    finally:
        quiet.setLevel(level)


def _bundle(
    plan: Plan, instance: Instance, here: str, ips: Mapping[str, str] | None = None
) -> dict[str, float]:
    """What one instance asks of the cluster: its process's ``resources`` and ``node``;
    an instance that uses an ndarray (real shared memory, made by topo) runs on
    topo's node, ``here``."""
    process = plan.spec.processes[instance.process]
    resources = getattr(process, "resources", None)
    bundle: dict[str, float] = {"CPU": DEFAULT_CPUS}
    if resources is not None:
        if resources.cpus:
            bundle["CPU"] = float(resources.cpus)
        if resources.gpus:
            bundle["GPU"] = float(resources.gpus)
        if resources.memory:
            bundle["memory"] = float(resources.memory)
        for key, amount in (resources.custom or {}).items():
            bundle[key] = float(amount)
    node = getattr(process, "node", None)
    if any(plan.model(b.name).kind == "ndarray" for b in instance.bindings):
        node = here
    if node:
        bundle[f"node:{(ips or {}).get(node, node)}"] = 0.001
    return bundle


def _missing(key: str, wanted: float, have: float, what: str = "has") -> str:
    unit = {"CPU": "CPUs", "GPU": "GPUs", "memory": "bytes of memory"}.get(key, f"of {key!r}")
    if key.startswith("node:"):
        return f"the run asks for node {key[5:]}, which is not in the cluster"
    return f"the run needs {wanted:g} {unit}, the cluster {what} {have:g}"


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__


def _unpickled(data: Any) -> Any:
    try:
        if isinstance(data, list):  # a big item in the object store
            return ray.get(data[0], timeout=10)
        return pickle.loads(data)
    except Exception as e:
        raw = data if isinstance(data, bytes) else b""
        return RawItem(raw, f"could not be read back: {type(e).__name__}: {e}")
