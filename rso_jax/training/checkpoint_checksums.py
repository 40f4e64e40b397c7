"""Checksums of training checkpoints: a checkpoint changed after it was saved is found before
it is restored.

`train_loop` saves each step with orbax, in the background. Once orbax has finished a step
(its directory is in place), the first process writes `checksums.json` into the step
directory: the size and SHA-256 of every other file there (`file_checksums`). It hashes on a
thread of its own, so that training goes on meanwhile; the next save waits for it, as orbax
waits for the previous save. Before a step is restored its files are compared with that
record: a changed, missing, added or resized file, or a damaged record, makes it unusable.

A step directory without `checksums.json` is unusable too: nothing can tell whether its files
are the ones saved. What leaves one is rare: a kill in the moment between orbax finishing the
step and its checksums being written (only the newest step, since a save starts once the
previous one's checksums are written) or a record deleted by hand. Setting it aside
(`checkpoint_resume` moves it, whole, to `checkpoints_unusable/`, where it can still be looked
at) costs redoing the steps since the checkpoint before it; restoring it could resume from
damaged state without a word, which is what the checksums are there to prevent.

The exception is a checkpoint directory written before checkpoints carried checksums: the
manager writes `CHECKSUMS_KEPT` into the directory before its first save, so a directory
without that marker holds only such checkpoints. Those are restored unverified, with a
warning, rather than thrown away (a long run started with an older version resumes); before
the marker is written, they (and `best/`) get their checksums.json as they are then, so that
they stay usable afterwards.

`train_loop` records the parameters of the best evaluation (`best/`) the same way, once their
`best.json` is written.

With several processes the first one compares (the files are shared), and every process gets
its verdict, so that all take the same decision.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any, Iterable, Optional, Sequence

from rso_jax.runtime import atomic_io, file_checksums, processes

logger = logging.getLogger(__name__)

CHECKSUMS_FILE = "checksums.json"
# In a checkpoint directory: its steps are saved with checksums (absent: saved before they were).
CHECKSUMS_KEPT = "CHECKSUMS_KEPT"
_WRITER = "the save"  # who wrote the files, in the sentences of `file_checksums.mismatches`


def write(directory: str) -> None:
    """Records the size and SHA-256 of every file below `directory` in its checksums.json
    (atomically; the first process only).

    Raises:
      FileNotFoundError: there is no such directory (the save did not leave one).
    """
    if not processes.is_writer():
        return
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory} is not there to be checksummed: the save did not "
                                "leave it.")
    names = file_checksums.files_below(directory, excluded={CHECKSUMS_FILE})
    atomic_io.write_json(os.path.join(directory, CHECKSUMS_FILE),
                         file_checksums.record(directory, names))


def _read_record(path: str) -> Optional[file_checksums.Record]:
    """The record in a checksums.json; None when it cannot be read as one."""
    try:
        with open(path) as stream:
            recorded = json.load(stream)
        for entry in recorded.values():
            int(entry["bytes"]), str(entry["sha256"])
        return recorded
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return None


def keeps_checksums(checkpoint_dir: str) -> bool:
    """Whether the steps of `checkpoint_dir` were saved with checksums (not by a version of this
    project from before them)."""
    return os.path.isfile(os.path.join(checkpoint_dir, CHECKSUMS_KEPT))


def _first_mismatch(directory: str, unrecorded_ok: bool) -> Optional[str]:
    path = os.path.join(directory, CHECKSUMS_FILE)
    if not os.path.isfile(path):
        if unrecorded_ok:
            return None
        return f"it has no {CHECKSUMS_FILE}, so its files cannot be checked"
    recorded = _read_record(path)
    if recorded is None:
        return f"{path} is damaged"
    present = file_checksums.files_below(directory, excluded={CHECKSUMS_FILE})
    return next(file_checksums.mismatches(directory, recorded, _WRITER, present), None)


def mismatch(directory: str, unrecorded_ok: bool = False) -> Optional[str]:
    """None when the files below `directory` are those its checksums.json records; else the
    first difference, in a sentence that names the file. The first process compares; every
    process gets whether it found a difference (the others, a pointer to its log).

    Args:
      directory: a checkpoint step directory, or `best/`.
      unrecorded_ok: a directory with no checksums.json passes (it was saved before checksums
        were kept: `keeps_checksums`), with a warning.
    """
    found = _first_mismatch(directory, unrecorded_ok) if processes.is_writer() else None
    if (unrecorded_ok and found is None
            and not os.path.isfile(os.path.join(directory, CHECKSUMS_FILE))):
        logger.warning("%s was saved before checkpoints carried checksums: restored without "
                       "checking its files.", directory)
    if processes.any_process(found is not None):
        return found or f"the first process found the files of {directory} changed; see its log"
    return None


def newest_verified(checkpoint_dir: str,
                    steps: Iterable[int]) -> tuple[Optional[int], list[str]]:
    """The newest of `steps` (step directories of `checkpoint_dir`) whose files match their
    checksums, None when none does; and why each newer one does not ('step 6: ...')."""
    failures = []
    unrecorded_ok = not keeps_checksums(checkpoint_dir)
    for step in sorted(steps, reverse=True):
        problem = mismatch(os.path.join(checkpoint_dir, str(step)), unrecorded_ok)
        if problem is None:
            return step, failures
        failures.append(f"step {step}: {problem}")
    return None, failures


def saved_steps(checkpoint_dir: str) -> list[int]:
    """The steps whose directories orbax keeps in `checkpoint_dir` (named by the step), oldest
    first; none when the directory does not exist."""
    names = os.listdir(checkpoint_dir) if os.path.isdir(checkpoint_dir) else []
    return sorted(int(name) for name in names if name.isdigit())


class ChecksummedCheckpointManager:
    """An orbax CheckpointManager whose every saved step gets its checksums.json as soon as
    orbax has finished it (see the module docstring)."""

    def __init__(self, manager: Any, directory: str, companions: Sequence[str] = ()):
        """Wraps `manager`, an orbax CheckpointManager of `directory`; `companions` are other
        directories saved with checksums (`best/`)."""
        self.manager = manager
        self.directory = directory
        self.companions = tuple(companions)
        self._writing: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def restore(self, step: int, args: Any) -> Any:
        return self.manager.restore(step, args=args)

    def save(self, step: int, args: Any) -> bool:
        """Saves `step` as orbax does (in the background when asynchronous), then writes its
        checksums on a thread once orbax has finished. Returns whether orbax saved it."""
        self.wait_until_finished()  # the previous save and its checksums (orbax waits anyway)
        if processes.is_writer() and not keeps_checksums(self.directory):
            self._record_unrecorded()
            atomic_io.write_text(os.path.join(self.directory, CHECKSUMS_KEPT),
                                 "Every step of this directory is saved with its checksums.json.\n")
        saved = self.manager.save(step, args=args)
        if saved and processes.is_writer():
            self._writing = threading.Thread(target=self._write_when_saved, args=(step,),
                                             name=f"checksums of step {step}", daemon=True)
            self._writing.start()
        return saved

    def _record_unrecorded(self) -> None:
        """Checksums for what was saved before checksums were kept (restored unverified), so
        that it stays usable once the marker says every step carries them."""
        os.makedirs(self.directory, exist_ok=True)
        saved = [os.path.join(self.directory, str(step)) for step in saved_steps(self.directory)]
        for directory in [*saved, *self.companions]:
            if (os.path.isdir(directory)
                    and not os.path.isfile(os.path.join(directory, CHECKSUMS_FILE))):
                write(directory)

    def _write_when_saved(self, step: int) -> None:
        try:
            self.manager.wait_until_finished()
            write(os.path.join(self.directory, str(step)))
        except BaseException as error:  # raised in the training thread by the next wait
            self._error = error

    def wait_until_finished(self) -> None:
        """Waits for orbax's save in progress and for its checksums; raises what writing
        them raised."""
        self.manager.wait_until_finished()
        if self._writing is not None:
            self._writing.join()
            self._writing = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        try:
            self.wait_until_finished()
        finally:
            self.manager.close()
