"""What runs in a Ray worker for one instance: the same set-up as a local child, then
the target, and an answer the launcher turns into the supervisor's events.

The answer is ``(kind, payload, exit code)``: ``("returned", result, 0)``,
``("raised", traceback text, 1)`` or ``("exit", None, code)`` for ``sys.exit(code)``
(Ray itself would report a worker that exits as crashed, with the code only in its log).
What the target prints goes to the hub in batches, and from there to topo's output.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from topo.backends.ray import proxies
from topo.context import RunContext
from topo.jsonable import to_jsonable
from topo.targets import call_target, target_traceback

LINES_EVERY_S = 0.02  # how often printed lines leave for the hub
END_FLUSH_S = 5.0  # at most this long, at the end, to hand over what was put and printed


class _Lines(io.TextIOBase):
    """A text stream that sends whole lines to the hub, in order, a batch at a time."""

    def __init__(self, hub: Any, instance: str) -> None:
        self.hub, self.instance = hub, instance
        self.partial = ""
        self.ready: list[str] = []
        self.lock = threading.Lock()
        self.last: Any = None  # the latest call sent: waited for at the end
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name="topo-output", daemon=True)
        self.thread.start()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self.lock:
            *lines, self.partial = (self.partial + text).split("\n")
            self.ready.extend(lines)
        return len(text)

    def _send(self) -> None:
        with self.lock:
            lines, self.ready = self.ready, []
        if lines:
            self.last = self.hub.print_lines.remote(self.instance, lines)

    def _run(self) -> None:
        while not self.wake.wait(LINES_EVERY_S):
            self._send()

    def close_and_send(self) -> None:
        """Everything printed, the last line even without its newline, is in the hub."""
        import ray

        self.wake.set()
        self.thread.join(1.0)
        with self.lock:
            if self.partial:
                self.ready.append(self.partial)
                self.partial = ""
        self._send()
        if self.last is not None:
            with contextlib.suppress(Exception):
                ray.get(self.last, timeout=END_FLUSH_S)


_STOP = b"\0"  # what ends the watcher: no signal has the number 0
_wake_pipe: tuple[int, int] | None = None  # (read end, write end) while a target runs


def _forget_wake_pipe() -> None:
    """In a child the target forks: its signals must not reach the parent's watcher."""
    global _wake_pipe
    if _wake_pipe is not None:
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(-1)
        for fd in _wake_pipe:
            with contextlib.suppress(OSError):
                os.close(fd)
        _wake_pipe = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_wake_pipe)


def _sigint_handled() -> None:
    """Python's SIGINT handler, if this worker inherited SIGINT ignored (a Ray started
    from a background shell, ``ray start ... &``): ``ray.cancel`` calls
    ``_thread.interrupt_main``, which does nothing at all without it. For the rest of
    the worker's life, which is this one task; processes the target starts inherit it."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(
        signal.SIGINT
    ) in (signal.SIG_IGN, signal.SIG_DFL):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _put_back_wakeup_fd(fd: int) -> None:
    # one closed meanwhile cannot be put back: not worth failing the target's result for
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(fd)


def _forward(read_end: int, main: int, wake: int) -> None:
    while data := os.read(read_end, 64):
        if signal.SIGINT in data:
            signal.pthread_kill(main, wake)
        if _STOP in data:
            return


@contextlib.contextmanager
def _cancel_wakes_the_target() -> Iterator[None]:
    """Make ``ray.cancel`` stop a target blocked in a system call (``time.sleep``, a
    ``select``...), as SIGTERM does locally.

    Ray cancels by simulating a SIGINT in the main thread (``_thread.interrupt_main``):
    Python raises KeyboardInterrupt at its next bytecode, but a blocked call is not
    interrupted, because Ray's workers block the real SIGINT. So a target sleeping for
    a minute was not stopped, only killed after the grace period, its ``finally``
    blocks not run. The simulated SIGINT writes its number to the wakeup fd; a thread
    reading it sends the main thread a real signal of its own, which interrupts the
    call, and Python then raises the KeyboardInterrupt. Where there are no real-time
    signals (macOS), a blocked target is still only killed after the grace period.
    """
    global _wake_pipe
    first_realtime = getattr(signal, "SIGRTMIN", None)
    main = threading.main_thread().ident
    if (
        first_realtime is None
        or not hasattr(signal, "pthread_kill")
        or threading.current_thread() is not threading.main_thread()
        or main is None
    ):
        yield
        return
    wake = first_realtime + 1
    watcher: threading.Thread | None = None
    read_end, write_end = os.pipe()
    old_handler: Any = None

    def release() -> None:
        """The watcher stopped, its end closed and the wake signal's handler back; if
        it does not stop, both stay (a handler put back could kill this process)."""
        global _wake_pipe
        _wake_pipe = None
        if watcher is not None:
            with contextlib.suppress(OSError):
                os.write(write_end, _STOP)
            watcher.join(1.0)
            if watcher.is_alive():
                return
        os.close(read_end)
        if old_handler is not None:
            signal.signal(wake, old_handler)

    # Undone in the reverse order, whatever is raised, a cancel included.
    with contextlib.ExitStack() as undo:
        undo.callback(os.close, write_end)
        undo.callback(release)
        _wake_pipe = (read_end, write_end)
        os.set_blocking(write_end, False)
        old_handler = signal.signal(wake, lambda signum, frame: None)
        old_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        undo.callback(_put_back_wakeup_fd, old_fd)
        watcher = threading.Thread(
            target=_forward, args=(read_end, main, wake), name="topo-cancel", daemon=True
        )
        watcher.start()
        yield


def _exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)  # sys.exit("message"): printed, exit code 1
    return 1


def run_instance(
    hub: Any,
    instance: str,
    target: str,
    args: dict[str, Any],
    env: dict[str, str],
    context: RunContext,
    objects: dict[str, Any],
    cwd: str,
) -> tuple[str, Any, int]:
    """Run one instance's target in this Ray worker (a fresh process: max_calls=1)."""
    import ray

    _sigint_handled()  # first: a cancel can come during the set-up too
    proxies.set_instance(instance)
    os.environ.update(env)
    # Processes the target starts itself find the cluster (see proxies.handle); they
    # are spawned, since a Ray worker cannot fork.
    os.environ["TOPO_RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    import multiprocessing

    multiprocessing.set_start_method("spawn", force=True)
    if os.path.isdir(cwd):  # the same machine, or a shared file system
        os.chdir(cwd)
    context_node = ray.get_runtime_context().get_node_id()
    facts = {"pid": os.getpid(), "node": ray.util.get_node_ip_address(), "node_id": context_node}
    with contextlib.suppress(Exception):  # waited for: an instance killed at once is placed
        ray.get(hub.hello.remote(instance, facts), timeout=END_FLUSH_S)
    lines = _Lines(hub, instance)
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = lines
    answer: tuple[str, Any, int]
    try:
        with _cancel_wakes_the_target():
            result = call_target(target, args, objects, context)
        answer = ("returned", to_jsonable(result), 0)
    except SystemExit as e:
        answer = ("exit", None, _exit_code(e))
    except KeyboardInterrupt:  # ray.cancel(): stopped, as by SIGTERM
        _give_back(hub, objects)
        raise
    except BaseException as e:
        text = target_traceback(e)
        sys.stderr.write(text)
        answer = ("raised", text, 1)
    finally:
        try:
            started = time.monotonic()
            if not proxies.flush_all(END_FLUSH_S):
                sys.stderr.write(
                    f"topo: {instance}: what it put could not all be sent in "
                    f"{time.monotonic() - started:.0f} s\n"
                )
            _give_back(hub, objects)
            lines.close_and_send()
        finally:
            sys.stdout, sys.stderr = saved
    return answer


def _give_back(hub: Any, objects: dict[str, Any]) -> None:
    """Items a reader took in a batch and did not get to: back to the front of their
    queue, so that a stopped reader loses none of them."""
    import ray

    for obj in objects.values():
        if isinstance(obj, proxies.Queue):
            items = obj.untaken()
            if items:
                with contextlib.suppress(Exception):
                    ray.get(hub.give_back.remote(obj._name, items), timeout=END_FLUSH_S)
