"""Several JAX processes (a multi-host pod slice, a multi-GPU machine run one process per
host): who writes, where all wait, and how results come back to every host.

Under `jax.distributed` every process runs the same program on its own devices and the mesh
spans them all. The experiment keeps five rules so that the processes never diverge:
  * every process reads the same files and takes every decision the same way from them;
  * one process (the first) writes every file: `atomic_io` skips the writes of the others;
  * before anyone reads what was written, all wait at a `barrier`;
  * arrays brought back to the host are whole on every process (`to_host` gathers the rows
    that other processes' devices hold);
  * an operation over a whole tree of arrays is one jitted computation, not one eager
    computation per array: under gloo, hundreds of small computations with collectives in
    flight at once deadlock XLA's CPU runtime (docs/reliability.md).
With one process every function here is a plain transfer or does nothing, and JAX is not even
asked (so nothing here starts a backend before `jax.distributed.initialize`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np


def distributed() -> bool:
    """Whether `jax.distributed.initialize` has run in this process."""
    jax = sys.modules.get("jax")
    if jax is None:
        return False
    is_initialized = getattr(jax.distributed, "is_initialized", None)
    if is_initialized is not None:
        return bool(is_initialized())
    from jax._src import distributed as state  # JAX versions before is_initialized()
    return state.global_state.client is not None


def count() -> int:
    """The number of processes of the run (1 without `jax.distributed`)."""
    if not distributed():
        return 1
    import jax
    return jax.process_count()


def index() -> int:
    """This process's index (0 without `jax.distributed`)."""
    if not distributed():
        return 0
    import jax
    return jax.process_index()


def is_writer() -> bool:
    """Whether this process writes the run's files: the first one."""
    return index() == 0


def barrier(name: str) -> None:
    """Waits until every process has reached the barrier called `name` (the same name in the
    same order on every process)."""
    if count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """Whether `flag` is true on any process; every process gets the same answer."""
    return largest(int(bool(flag))) > 0


def largest(value: int) -> int:
    """The largest of every process's `value` (an int that fits 32 bits), on every process."""
    if count() == 1:
        return int(value)
    from jax.experimental import multihost_utils
    return int(np.asarray(multihost_utils.process_allgather(np.asarray(value, np.int32))).max())


def first_process_value(value: int) -> int:
    """The first process's `value` (an int that fits 32 bits), on every process."""
    if count() == 1:
        return int(value)
    from jax.experimental import multihost_utils
    return int(multihost_utils.broadcast_one_to_all(np.asarray(value, np.int32)))


def to_host(tree: Any) -> Any:
    """Numpy copies of a tree of arrays, whole on every process: the rows held by other
    processes' devices are gathered (a collective, so every process must call it)."""
    import jax

    def one(value):
        if not isinstance(value, jax.Array) or value.is_fully_addressable \
                or value.is_fully_replicated:
            return np.asarray(value)
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(value, tiled=True))
    return jax.tree_util.tree_map(one, tree)


class _ProcessTagged(logging.Formatter):
    """A handler's own formatter, each record started with `[process i/n] ` when several
    processes run."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        tag = f"[process {index()}/{count()}] " if count() > 1 else ""
        return tag + self.inner.format(record)


def tag_log_lines() -> None:
    """Starts every log line of the root logger's handlers with `[process i/n] ` once several
    processes run, so that the merged logs of a job say which process speaks."""
    for handler in logging.getLogger().handlers:
        if not isinstance(handler.formatter, _ProcessTagged):
            handler.setFormatter(_ProcessTagged(handler.formatter or logging.Formatter()))
