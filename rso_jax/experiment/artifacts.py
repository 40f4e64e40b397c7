"""The work directory: one folder per stage, its DONE marker, arrays and parameters.

A finished stage leaves `DONE.json` (its summary, and the size and SHA-256 of each output
file) with the operative gin config beside it. Every file is written atomically (`atomic_io`),
so an interrupted stage leaves no half file; a file damaged later (a full disk, a copy cut
short, an edit by hand) no longer matches its DONE marker and is found before it is read.
The evaluation's results are outputs of its stage too; their copies at the top of the work
directory, where users look for them, appear only once the stage is done (`publish`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from typing import IO, Any, Iterator, Optional

import numpy as np

from rso_jax import model_spec, partitioning
from rso_jax.training import train_loop
from rso_jax.runtime import atomic_io, file_checksums, processes, run_info
from rso_jax.weights import orbax_params, tree

logger = logging.getLogger(__name__)

DONE_FILE = "DONE.json"
SETTINGS_FILE = "settings.json"  # what a stage was started with (stage_records)
PARAMS_DIR = "params"
# What a stage directory holds besides its outputs: records, and a training stage's working
# state (which `train_loop` checks itself when it resumes).
_NOT_OUTPUTS = {DONE_FILE, SETTINGS_FILE, run_info.OPERATIVE_CONFIG_FILE,
                *train_loop.RUN_STATE_NAMES}
RESULTS_FILE = "results.json"
RESULTS_TABLE_FILE = "results.md"
# Files of a finished stage copied to the top of the work directory (of its round's directory,
# for a later round's stage), where users look for them.
PUBLISHED = {"evaluate": (RESULTS_FILE, RESULTS_TABLE_FILE, run_info.OPERATIVE_CONFIG_FILE)}


def published_copies(stage: str) -> list[tuple[str, str]]:
    """(file of the stage, its copy) for each file `stage` ('evaluate', 'round_2/evaluate')
    publishes, as paths relative to the work directory."""
    from rso_jax.experiment import rounds

    directory = rounds.round_dir("", rounds.round_of(stage))
    return [(os.path.join(stage, name), os.path.join(directory, name))
            for name in PUBLISHED.get(rounds.base_stage(stage), ())]


def publish(work_dir: str, stage: str) -> list[str]:
    """Copies a finished stage's published files to the top of the work directory where a
    copy is missing or differs (the first process); returns the paths written. Called once the
    stage is marked done, so a stage that fails leaves no new copy; called again for a stage
    done before, it restores a copy deleted or damaged since (or never made: a run stopped
    between the DONE marker and the copies)."""
    if not processes.is_writer():
        return []
    written = []
    for name, copy in published_copies(stage):
        source, target = os.path.join(work_dir, name), os.path.join(work_dir, copy)
        if not os.path.isfile(source):
            continue  # a work directory whose stage wrote the copies alone, as it once did
        with open(source, "rb") as stream:
            data = stream.read()
        if os.path.isfile(target):
            with open(target, "rb") as stream:
                if stream.read() == data:
                    continue
        atomic_io.write_bytes(target, data)
        written.append(target)
    return written


def stage_dir(work_dir: str, stage: str) -> str:
    return os.path.join(work_dir, stage)


def read_done(work_dir: str, stage: str) -> Optional[dict]:
    """A finished stage's DONE summary; None when the stage has not finished (an empty or
    damaged marker, which no finished stage writes, is reported and does not count)."""
    path = os.path.join(stage_dir(work_dir, stage), DONE_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as stream:
            summary = json.load(stream)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        _warn_once(f"{path} is damaged ({error}); stage {stage} runs again.")
        return None
    if not isinstance(summary, dict):
        _warn_once(f"{path} holds no stage summary; stage {stage} runs again.")
        return None
    return summary


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """Logs a warning the first time only (the records are read many times in a run)."""
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def is_done(work_dir: str, stage: str) -> bool:
    return read_done(work_dir, stage) is not None


def check_work_dir(work_dir: str) -> None:
    """Fails, naming WORK_DIR, unless it is (or can be made) a writable directory; creates
    nothing, so that a run refused at start-up leaves no trace."""
    path = os.path.abspath(work_dir)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise ValueError(f"WORK_DIR {work_dir}: {path} is a file, not a directory; choose "
                         "another WORK_DIR.")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"WORK_DIR {work_dir}: {path} is not writable; choose a directory "
                         "you can write to.")


def make_work_dir(work_dir: str) -> None:
    check_work_dir(work_dir)
    os.makedirs(work_dir, exist_ok=True)


LOCK_FILE = ".lock"


def try_lock(path: str) -> Optional[IO]:
    """Takes an exclusive lock on `path` (made if missing) on the first process: the open
    file that holds it, or None when another run holds it (and on the other processes)."""
    import fcntl

    if not processes.is_writer():
        return None
    handle = open(path, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def release_lock(handle: Optional[IO]) -> None:
    if handle is not None:
        import fcntl

        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


@contextlib.contextmanager
def work_dir_lock(work_dir: str) -> Iterator[None]:
    """Holds WORK_DIR for this run (its first process takes the lock, and every process learns
    whether it got it): a second run of the same WORK_DIR at the same time is refused, naming
    it, rather than both writing and deleting there."""
    path = os.path.join(work_dir, LOCK_FILE)
    if processes.is_writer():
        make_work_dir(work_dir)
    handle = try_lock(path)
    if processes.any_process(processes.is_writer() and handle is None):
        raise ValueError(f"WORK_DIR {work_dir} is in use by another run (it holds {path}); "
                         "wait for that run to end, or choose another WORK_DIR.")
    try:
        yield
    finally:
        release_lock(handle)


def mark_done(work_dir: str, stage: str, summary: dict) -> None:
    """Writes the stage's DONE marker: `summary` and the manifest of its outputs (the first
    process, once every process has written its part of them)."""
    if not processes.is_writer():
        return
    directory = stage_dir(work_dir, stage)
    run_info.write_gin_config(directory)
    atomic_io.write_json(os.path.join(directory, DONE_FILE),
                         {**summary, "outputs": output_manifest(work_dir, stage)})


def output_files(work_dir: str, stage: str) -> list[str]:
    """The stage's output files, as paths relative to the work directory (temporary files of
    interrupted writes are not outputs)."""
    found = [os.path.join(stage, name) for name in
             file_checksums.files_below(stage_dir(work_dir, stage), excluded=_NOT_OUTPUTS)]
    return sorted(found)


def output_manifest(work_dir: str, stage: str) -> file_checksums.Record:
    """relative path -> {'bytes', 'sha256'} for each of the stage's output files."""
    return file_checksums.record(work_dir, output_files(work_dir, stage))


def manifest_digest(manifest: dict[str, dict]) -> str:
    """One hash for all of a stage's outputs (what the stages after it record having read)."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def damaged_outputs(work_dir: str, manifest: file_checksums.Record) -> list[str]:
    """How the files listed in a DONE marker's manifest differ from what is on disk now."""
    return list(file_checksums.mismatches(work_dir, manifest, "the stage"))


@contextlib.contextmanager
def _reading(path: str) -> Iterator[None]:
    """Turns a failure to read `path` because of its contents into an error that names it and
    what to do; a missing file, want of memory, a device error or parameters of another model
    pass through as they are."""
    import jax

    try:
        yield
    except (FileNotFoundError, MemoryError, jax.errors.JaxRuntimeError,
            tree.ParamTreeMismatchError):
        raise
    except Exception as error:  # BadZipFile, EOFError; orbax and TensorStore raise many kinds
        raise ValueError(f"{path} could not be read ({type(error).__name__}: {error}). If it "
                         "was damaged after its stage finished, run the experiment again with "
                         "that stage among STAGES: a stage whose outputs no longer match its "
                         "DONE.json runs again.") from error


def save_arrays(path: str, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_io.write_bytes(path, buffer.getvalue())


def load_arrays(path: str) -> dict[str, np.ndarray]:
    with _reading(path), np.load(path) as data:
        return {key: data[key] for key in data.files}


def params_path(work_dir: str, stage: str) -> str:
    return os.path.join(stage_dir(work_dir, stage), PARAMS_DIR)


def load_params(work_dir: str, stage: str, config: model_spec.ModelSpec,
                partitioner: partitioning.Partitioner) -> Any:
    """A stage's parameters restored straight onto their shards on the mesh."""
    path = params_path(work_dir, stage)
    with _reading(path):
        return orbax_params.restore_params(path, config, partitioner.param_shardings(config))


def save_params(work_dir: str, stage: str, params: Any, config: model_spec.ModelSpec) -> None:
    orbax_params.save_params(params, config, params_path(work_dir, stage))
