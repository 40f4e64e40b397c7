"""Stop signals: Ctrl-C (SIGINT) and SIGTERM (what TPU VMs, GCE, SLURM and Kubernetes send
before they stop a job) ask the run to stop at its next safe point; a second one stops it at
once.

A signal only records the request: nothing is raised where it lands. (Python's default for
Ctrl-C, a KeyboardInterrupt raised wherever the main thread is, abandoned an XLA compilation
in flight: the compilation went on in XLA's thread pool while the interpreter shut down and
destroyed the client it was compiling for, and the process died of a segmentation fault.) The
work stops where it can:
  * a training loop at the end of a step, once a checkpoint of that step is saved
    (`train_loop`; the rerun resumes there);
  * inference between two chunks, and the runner between two stages (`stop_if_requested`): the
    stage in progress keeps nothing, and the rerun redoes it from its start.
Either raises `Stopped`; the entry point says so in one line and exits with 128 + the signal's
number (130 for Ctrl-C, 143 for SIGTERM), as a shell reports a job the signal ended. With
several processes all stop at the same point: each asks whether any process received a signal.

A thread hears the signals (each one's byte on a wakeup pipe), so the request is acknowledged
at once even while the main thread waits inside XLA, and a second signal ends the process
there and then (exit code 128 + its number), stuck or not: the work in progress is lost, but
writes are atomic (`atomic_io`), so nothing is left half-written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Iterator, Optional

from rso_jax.runtime import processes

logger = logging.getLogger(__name__)

NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}
_KINDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "preempted"}


class Stopped(Exception):
    """The run stopped at a safe point because a stop signal reached this or another process."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a job ended by it."""
        return 128 + self.signum

    @property
    def kind(self) -> str:
        """'interrupted' (Ctrl-C) or 'preempted' (SIGTERM)."""
        return _KINDS[self.signum]


class _Listener:
    """Holds the stop requests while `listening` is active: the first signal received, and
    how many blocks defer `stop_if_requested` to safe points of their own."""

    def __init__(self, taken: list[int]):
        self.received: Optional[int] = None
        self.deferrals = 0
        self.taken = taken  # the signals it hears (not those ignored before)
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)  # as signal.set_wakeup_fd requires
        self._thread = threading.Thread(target=self._hear, name="stop_signals", daemon=True)

    def start(self) -> int:
        """Starts hearing; returns the write end of the pipe, for signal.set_wakeup_fd."""
        self._thread.start()
        return self._write_fd

    def stop(self) -> None:
        os.close(self._write_fd)  # the thread reads the end of the pipe and returns
        self._thread.join()
        os.close(self._read_fd)

    def _hear(self) -> None:
        while True:
            signal_numbers = os.read(self._read_fd, 64)
            if not signal_numbers:
                return
            for signum in signal_numbers:
                if signum in NAMES:
                    self._received(signum)

    def _received(self, signum: int) -> None:
        name = NAMES[signum]
        if self.received is None:
            self.received = signum
            logger.warning("%s received: stopping at the next safe point (a training stage "
                           "first saves a checkpoint of its current step). %s again stops at "
                           "once, losing the work in progress.", name, name)
            return
        os.write(2, (f"rso_jax: {name} received again: stopped at once. Run the same command "
                     "again to redo the stage in progress (a training stage resumes from its "
                     "last checkpoint).\n").encode())
        os._exit(128 + signum)  # no interpreter shutdown: XLA may be busy on other threads


_listener: Optional[_Listener] = None


def _ignore(signum, frame) -> None:  # the listener's thread does the work
    pass


@contextlib.contextmanager
def listening() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM request a stop (see the module docstring) instead
    of their usual effect; the previous handlers are put back after it. A block inside another
    shares its requests, and takes the signals back from a library that took them meanwhile
    (`jax.distributed.initialize` starts a preemption service that takes SIGTERM). Only the
    main thread can take signals: elsewhere, and for a signal that was ignored when the block
    began (a background job's Ctrl-C), nothing changes."""
    global _listener
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _listener is not None:
        for signum in _listener.taken:
            signal.signal(signum, _ignore)
        yield
        return
    listener = _Listener([signum for signum in NAMES
                          if signal.getsignal(signum) is not signal.SIG_IGN])
    previous_fd = signal.set_wakeup_fd(listener.start(), warn_on_full_buffer=False)
    previous = {signum: signal.signal(signum, _ignore) for signum in listener.taken}
    _listener = listener
    try:
        yield
    finally:
        _listener = None
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(previous_fd)
        listener.stop()


def received() -> Optional[int]:
    """The stop signal this process received (the first, if several), or None."""
    return None if _listener is None else _listener.received


def agreed() -> Optional[int]:
    """The stop signal that stops every process (the largest number any of them received), or
    None when none received one. Every process must call it at the same point."""
    return processes.largest(received() or 0) or None


def describe(signum: int) -> str:
    """'Ctrl-C (SIGINT) received', or '... received by another process'."""
    return NAMES[signum] + (" received" if received() == signum
                            else " received by another process")


def stop_if_requested() -> None:
    """Raises `Stopped` when a stop signal reached any process (every process must call it at
    the same point); does nothing inside `deferred`. For safe points of work that keeps nothing
    of an unfinished stage: the rerun redoes the stage from its start."""
    if _listener is None or _listener.deferrals:
        return
    signum = agreed()
    if signum is not None:
        raise Stopped(f"{describe(signum)}; stopped, keeping nothing of the stage in "
                      "progress. Run the same command again to go on: finished stages are "
                      "kept, and this one is redone from its start.", signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block `stop_if_requested` does nothing: the block (a training loop, whose
    evaluations run inference) stops at safe points of its own, asking `agreed`."""
    listener = _listener
    if listener is None:
        yield
        return
    listener.deferrals += 1
    try:
        yield
    finally:
        listener.deferrals -= 1
