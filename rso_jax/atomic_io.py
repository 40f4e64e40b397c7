"""Writes that never leave a half-written file or directory behind.

Everything is written under a temporary name in the destination's own directory and then
renamed into place (a rename within one file system is atomic), so a crash or a kill leaves
either the old artifact or the new one, never a mixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator


def write_bytes(path: str, data: bytes) -> None:
    """Atomically replaces `path` with `data`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)
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

    If the block raises, the temporary directory is removed and `path` is untouched.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    temp_dir = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(path) + ".tmp.")
    try:
        yield temp_dir
        if os.path.exists(path):
            old = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(path) + ".old.")
            os.rmdir(old)
            os.replace(path, old)
            os.replace(temp_dir, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp_dir, path)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
