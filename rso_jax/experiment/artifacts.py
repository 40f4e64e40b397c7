"""The work directory: one folder per stage, its DONE marker, arrays and parameters.

A finished stage leaves `DONE.json` (its summary) with the operative gin config beside it.
Every file is written atomically (`atomic_io`), so an interrupted stage leaves no half file.
"""

from __future__ import annotations

import io
import json
import logging
import os
from typing import Any, Optional

import numpy as np

from rso_jax import atomic_io, checkpoints, model_spec, partitioning, run_info

logger = logging.getLogger(__name__)

DONE_FILE = "DONE.json"
PARAMS_DIR = "params"


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
        logger.warning("%s is damaged (%s); stage %s runs again.", path, error, stage)
        return None
    if not isinstance(summary, dict):
        logger.warning("%s holds no stage summary; stage %s runs again.", path, stage)
        return None
    return summary


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


def mark_done(work_dir: str, stage: str, summary: dict) -> None:
    directory = stage_dir(work_dir, stage)
    run_info.write_gin_config(directory)
    atomic_io.write_json(os.path.join(directory, DONE_FILE), summary)


def save_arrays(path: str, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_io.write_bytes(path, buffer.getvalue())


def load_arrays(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def params_path(work_dir: str, stage: str) -> str:
    return os.path.join(stage_dir(work_dir, stage), PARAMS_DIR)


def load_params(work_dir: str, stage: str, config: model_spec.ModelSpec,
                partitioner: partitioning.Partitioner) -> Any:
    """A stage's parameters restored straight onto their shards on the mesh."""
    return checkpoints.restore_params(params_path(work_dir, stage), config,
                                      partitioner.param_shardings(config))


def save_params(work_dir: str, stage: str, params: Any, config: model_spec.ModelSpec) -> None:
    checkpoints.save_params(params, config, params_path(work_dir, stage))
