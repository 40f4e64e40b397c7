"""The work directory: one folder per stage, its DONE marker, arrays and parameters.

A finished stage leaves `DONE.json` (its summary) with the operative gin config beside it.
Every file is written atomically (`atomic_io`), so an interrupted stage leaves no half file.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from rso_jax import atomic_io, checkpoints, model_spec, partitioning, run_info

DONE_FILE = "DONE.json"
PARAMS_DIR = "params"


def stage_dir(work_dir: str, stage: str) -> str:
    return os.path.join(work_dir, stage)


def is_done(work_dir: str, stage: str) -> bool:
    return os.path.isfile(os.path.join(stage_dir(work_dir, stage), DONE_FILE))


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
