"""What a failed run tells its user: the stage it failed in and, for a failure of the
file system (a full disk, a file size limit, a permission, a read-only mount), the
operating system's error and the path it names, in one line, however deep in a library it
arose.

Libraries wrap the operating system's error: orbax raises it from a background thread inside
its own exceptions (found among their causes and contexts, or the members of an exception
group), and TensorStore, which writes orbax's arrays, reports it as a ValueError whose message
names the file and ends with `[os_error_code='28']`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
from typing import Iterator, Optional

_STAGE_ATTRIBUTE = "rso_jax_stage"

# What to do about the errors a user's environment causes (any other OSError is only named).
WHAT_TO_DO = {
    errno.ENOSPC: "the file system is full: free space on it or choose another WORK_DIR",
    errno.EDQUOT: "the disk quota is used up: free space or choose another WORK_DIR",
    errno.EFBIG: "a file reached the file size limit (`ulimit -f`) or the largest file the "
                 "file system holds: raise the limit or choose another WORK_DIR",
    errno.EACCES: "permission denied: make the path writable for this user or choose another "
                  "WORK_DIR",
    errno.EPERM: "the operation is not permitted: make the path writable for this user or "
                 "choose another WORK_DIR",
    errno.EROFS: "the file system is read-only: choose another WORK_DIR",
    errno.EIO: "the device reported an input/output error: check the disk",
}
_TENSORSTORE_ERROR = re.compile(r"os_error_code='(\d+)'")
_QUOTED_PATH = re.compile(r'"(/[^"]*)"')


@dataclasses.dataclass(frozen=True)
class OsFailure:
    """An operating system's error: its number and the path it names (None when unknown)."""

    errno: int
    path: Optional[str]

    def __str__(self) -> str:
        """'No space left on device (ENOSPC) at /path'."""
        name = errno.errorcode.get(self.errno, f"errno {self.errno}")
        at = f" at {self.path}" if self.path else ""
        return f"{os.strerror(self.errno)} ({name}){at}"


@contextlib.contextmanager
def in_stage(stage: str) -> Iterator[None]:
    """Records `stage` on an exception the block raises (for `stage_of`; an inner stage
    recorded first is kept)."""
    try:
        yield
    except Exception as error:
        if stage_of(error) is None:
            setattr(error, _STAGE_ATTRIBUTE, stage)
        raise


def stage_of(error: BaseException) -> Optional[str]:
    """The stage `error` was raised in (see `in_stage`), or None."""
    return getattr(error, _STAGE_ATTRIBUTE, None)


def _chain(error: BaseException) -> Iterator[BaseException]:
    """`error`, then its causes and contexts and the members of exception groups, each once."""
    pending, seen = [error], set()
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [current.__cause__, current.__context__,
                    *getattr(current, "exceptions", ())]


def os_failure(error: BaseException) -> Optional[OsFailure]:
    """The operating system's error behind `error` when the user can act on it (a full disk,
    a permission: `WHAT_TO_DO`) or when `error` is itself an OSError; else None (the project's
    own messages, which may wrap an OSError, say more)."""
    found = []
    for link in _chain(error):
        if isinstance(link, OSError) and link.errno is not None:
            path = link.filename
            found.append(OsFailure(link.errno, os.fsdecode(path)
                                   if isinstance(path, (str, bytes)) else None))
        else:
            code = _TENSORSTORE_ERROR.search(str(link))
            if code:
                paths = _QUOTED_PATH.findall(str(link)[:code.start()])
                found.append(OsFailure(int(code.group(1)), paths[-1] if paths else None))
    for candidate in found:
        if candidate.errno in WHAT_TO_DO:
            return candidate
    if isinstance(error, OSError) and found:
        return found[0]
    return None


def describe_os_failure(failure: OsFailure, stage: Optional[str]) -> str:
    """One line: the stage, the error and its path, what to do, and that the rerun goes on."""
    where = f"stage {stage}: " if stage else ""
    advice = WHAT_TO_DO.get(failure.errno)
    return (f"{where}{failure}" + (f"; {advice}" if advice else "")
            + ". Then run the same command again: finished stages are kept, and the stage "
              "in progress is redone (a training stage resumes from its last checkpoint).")
