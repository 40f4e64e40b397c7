"""Writes that never leave a half-written file or directory behind.

Everything is written under a temporary name in the destination's own directory and then
renamed into place (a rename within one file system is atomic), so a crash or a kill leaves
either the old artifact or the new one, never a mixture. What is written gets the modes that
`open` and `mkdir` would give under the process's umask (tempfile's own are 0600 and 0700).

With several JAX processes (`processes`) only the first one writes and deletes: the others'
calls return at once, and whoever reads what was written waits at a `processes.barrier` first.
`directory` is the exception: every process writes into it (an orbax checkpoint is saved by
all of them together), and it waits for all of them before the rename.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator

from rso_jax.runtime import processes

_TEMPORARY_MARK = ".partial-"  # in the name of every temporary file or directory written here


def _temporary_prefix(path: str) -> str:
    return "." + os.path.basename(path) + _TEMPORARY_MARK


def is_leftover(name: str) -> bool:
    """Whether a file or directory name is a temporary one of this module's writes."""
    return name.startswith(".") and _TEMPORARY_MARK in name


def remove_leftovers(directory: str, recursive: bool = True) -> list[str]:
    """Deletes, in `directory` (and below it when `recursive`), the temporary files and
    directories of writes that were killed before their rename (a SIGKILL runs no clean-up);
    returns their paths. Only call it when no other process is writing there."""
    removed = []
    if not processes.is_writer():
        return removed
    for root, folders, files in os.walk(directory):
        for name in [*files, *folders]:
            if is_leftover(name):
                path = os.path.join(root, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                removed.append(path)
        folders[:] = [f for f in folders if recursive and not is_leftover(f)]
    return removed


def _move_aside(path: str) -> str:
    """Renames `path` (absolute) to a fresh temporary name beside it; returns that name."""
    aside = tempfile.mkdtemp(dir=os.path.dirname(path), prefix=_temporary_prefix(path))
    os.rmdir(aside)
    os.replace(path, aside)
    return aside


def remove_tree(path: str) -> None:
    """Deletes a directory so that an interruption leaves it whole or gone: it is first renamed
    to a temporary name (which `remove_leftovers` of its parent finishes off). A link to a
    directory (a shared stage's) stays, and the directory it points to is left empty."""
    if not processes.is_writer():
        return
    if os.path.islink(path):
        target = os.path.realpath(path)
        if os.path.isdir(target):
            aside = _move_aside(target)
            os.makedirs(target, exist_ok=True)
            shutil.rmtree(aside, ignore_errors=True)
        return
    shutil.rmtree(_move_aside(os.path.abspath(path)), ignore_errors=True)


def symlink(target: str, path: str) -> None:
    """Atomically makes `path` a symbolic link to `target` (replacing a link already there)."""
    if not processes.is_writer():
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temp_path = os.path.join(directory, _temporary_prefix(path) + os.urandom(6).hex())
    os.symlink(target, temp_path)
    try:
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)
        raise


def _umask() -> int:
    try:  # Linux reports it without changing it (other threads may be creating files)
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def write_bytes(path: str, data: bytes) -> None:
    """Atomically replaces `path` with `data`. A failure to write (a full disk) raises an
    OSError that names `path` (the operating system's names no file, or the temporary one)."""
    if not processes.is_writer():
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    try:
        handle, temp_path = tempfile.mkstemp(dir=directory, prefix=_temporary_prefix(path))
    except OSError as error:
        if not error.errno:
            raise
        raise OSError(error.errno, error.strerror, path) from error
    try:
        os.fchmod(handle, 0o666 & ~_umask())
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_path, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)
        if isinstance(error, OSError) and error.errno and error.filename in (None, temp_path):
            raise OSError(error.errno, error.strerror, path) from error
        raise


def write_text(path: str, text: str) -> None:
    """Atomically replaces `path` with `text` (UTF-8)."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str, value: Any) -> None:
    """Atomically writes `value` as indented JSON."""
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def directory(path: str) -> Iterator[str]:
    """Yields a fresh temporary directory that replaces `path` when the block succeeds.

    If the block raises, the temporary directory is removed and `path` is untouched. With
    several processes all of them get the same temporary directory to write into; the first
    one renames it once every process has finished its block.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    if processes.count() > 1:
        tag = processes.first_process_value(int.from_bytes(os.urandom(4), "little") >> 1)
        temp_dir = os.path.join(parent, f"{_temporary_prefix(path)}{tag:08x}")
        if processes.is_writer():
            os.mkdir(temp_dir)
        processes.barrier(f"atomic_io.directory {temp_dir} made")
    else:
        temp_dir = tempfile.mkdtemp(dir=parent, prefix=_temporary_prefix(path))
    try:
        if processes.is_writer():
            os.chmod(temp_dir, 0o777 & ~_umask())
        failed = True
        try:
            yield temp_dir
            failed = False
        finally:  # every process learns whether any failed, so none waits for the others
            any_failed = processes.any_process(failed)
        if any_failed:
            raise RuntimeError(f"Another process failed while writing {path}; see its log.")
        if processes.is_writer():
            if os.path.exists(path):
                old = _move_aside(path)
                os.replace(temp_dir, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(temp_dir, path)
        processes.barrier(f"atomic_io.directory {path} in place")
    except BaseException:
        if processes.is_writer():
            shutil.rmtree(temp_dir, ignore_errors=True)
        raise
