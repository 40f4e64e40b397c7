"""Size and SHA-256 of files, recorded when they are written and compared before they are read.

A record maps each file's path, relative to a root directory, to
`{'bytes': size, 'sha256': hex digest}`. A stage's `DONE.json` records its outputs so;
`checkpoint_checksums` records every file of a training checkpoint so.
"""

from __future__ import annotations

import hashlib
import os
from typing import Collection, Iterable, Iterator, Optional

from rso_jax.runtime import atomic_io

Record = dict[str, dict]  # relative path -> {'bytes': int, 'sha256': str}


def file_sha256(path: str) -> str:
    """The hex SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def record(root: str, names: Iterable[str]) -> Record:
    """The size and SHA-256 of each file `names` lists (paths relative to `root`)."""
    return {name: {"bytes": os.path.getsize(os.path.join(root, name)),
                   "sha256": file_sha256(os.path.join(root, name))}
            for name in names}


def files_below(directory: str, excluded: Collection[str] = ()) -> list[str]:
    """Every file below `directory` (following links), as sorted paths relative to it, except
    the temporary files of interrupted `atomic_io` writes and the entries at its top that
    `excluded` names."""
    found = []
    for root, folders, files in os.walk(directory, followlinks=True):
        top = root == directory
        folders[:] = [name for name in folders
                      if not atomic_io.is_leftover(name) and not (top and name in excluded)]
        found += [os.path.relpath(os.path.join(root, name), directory) for name in files
                  if not atomic_io.is_leftover(name) and not (top and name in excluded)]
    return sorted(found)


def mismatches(root: str, recorded: Record, writer: str,
               present: Optional[Collection[str]] = None) -> Iterator[str]:
    """How the files below `root` differ from `recorded`, one sentence each: first missing
    files, files of another size and (when `present`, the files found there now, is given)
    files that `recorded` does not list; then files whose SHA-256 differs. Lazy: a caller that
    takes only the first difference hashes no more files than it takes to find it.

    Args:
      root: the directory the recorded paths are relative to.
      recorded: what was recorded when the files were written.
      writer: who wrote them, for the sentences ('the stage': '... the stage wrote 10').
      present: the files below `root` now (relative paths), to find ones added since.
    """
    unlisted = sorted(set(present or ()) - set(recorded))
    for name in sorted(set(recorded) | set(unlisted)):
        path = os.path.join(root, name)
        if name in unlisted:
            yield f"{path} is not among the files {writer} wrote"
        elif not os.path.isfile(path):
            yield f"{path} is missing"
        elif os.path.getsize(path) != recorded[name]["bytes"]:
            yield (f"{path} has {os.path.getsize(path)} bytes; {writer} wrote "
                   f"{recorded[name]['bytes']}")
    for name, expected in sorted(recorded.items()):
        path = os.path.join(root, name)
        if (os.path.isfile(path) and os.path.getsize(path) == expected["bytes"]
                and file_sha256(path) != expected["sha256"]):
            yield f"{path} is not what {writer} wrote (its SHA-256 differs)"
