"""Stages shared between experiments (SHARED_STAGES_DIR).

Each stage's directory lives in the shared directory under a name made of the stage and the
fingerprint of exactly the settings it depends on (`fingerprints.stage_settings`: its own
settings and the fingerprints of the stages it reads), and WORK_DIR/<stage> is a link to it.
Experiments that agree on a stage use one directory: the eleven Table 1 settings of one seed
train one SFT policy and one ranker and sample once, then each trains its own policy. A changed
setting changes the fingerprint of its stage and of every stage downstream, which get
directories of their own; the stages upstream are reused.

A run holds a lock on a shared directory while it runs that stage (`stage_lock`), so two runs
never write one directory at once: the second waits, then finds the stage done and reuses it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Iterator, Sequence

from rso_jax.runtime import atomic_io, processes
from rso_jax.experiment import artifacts, fingerprints
from rso_jax.experiment.config import Experiment

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"


def directory_name(experiment: Experiment, stage: str) -> str:
    """'sft-<fingerprint>', 'round_2.sample-<fingerprint>': the shared directory of `stage`."""
    settings = fingerprints.stage_settings(experiment, stage)
    return f"{stage.replace('/', '.')}-{fingerprints.fingerprint(settings)}"


def shared_directory(experiment: Experiment, stage: str) -> str:
    return os.path.join(os.path.abspath(experiment.shared_stages_dir),
                        directory_name(experiment, stage))


def link(experiment: Experiment, stages: Sequence[str]) -> None:
    """Points WORK_DIR/<stage> at the stage's shared directory (made if new) for each of
    `stages`, the work directory's names of all the experiment's stages. Refuses a WORK_DIR
    whose stages are directories of its own (made without SHARED_STAGES_DIR)."""
    own = [stage for stage in stages
           if os.path.lexists(os.path.join(experiment.work_dir, stage))
           and not os.path.islink(os.path.join(experiment.work_dir, stage))]
    if own:  # every process sees the same files, so all raise together
        raise ValueError(
            f"WORK_DIR {experiment.work_dir} holds stage directories of its own ({', '.join(own)}"
            f"), made without SHARED_STAGES_DIR; with SHARED_STAGES_DIR="
            f"{experiment.shared_stages_dir} its stages are links into that directory. Choose "
            "a new WORK_DIR, or run this one without SHARED_STAGES_DIR.")
    if processes.is_writer():
        for stage in stages:
            path = os.path.join(experiment.work_dir, stage)
            target = shared_directory(experiment, stage)
            os.makedirs(target, exist_ok=True)
            relative = os.path.relpath(os.path.realpath(target),
                                       os.path.realpath(os.path.dirname(path)))
            if not (os.path.islink(path) and os.readlink(path) == relative):
                atomic_io.symlink(relative, path)
    processes.barrier("shared stages linked")


def check_unshared(experiment: Experiment, stages: Sequence[str]) -> None:
    """Refuses to run without SHARED_STAGES_DIR in a WORK_DIR whose stages link into a shared
    directory: it would write and delete there without the stage locks."""
    linked = [stage for stage in stages
              if os.path.islink(os.path.join(experiment.work_dir, stage))]
    if linked:
        shared = os.path.dirname(os.path.realpath(os.path.join(experiment.work_dir, linked[0])))
        raise ValueError(
            f"WORK_DIR {experiment.work_dir} links its stages ({', '.join(linked)}) into the "
            f"shared directory {shared}; run it with SHARED_STAGES_DIR='{shared}', or choose a "
            "new WORK_DIR.")


@contextlib.contextmanager
def stage_lock(experiment: Experiment, stage: str, poll_seconds: float = 5.0) -> Iterator[None]:
    """Holds the shared directory of `stage` while the block runs it, waiting (and saying so)
    while another run holds it; does nothing without SHARED_STAGES_DIR. Every process waits
    as long as the first, which takes the lock."""
    if not experiment.shared_stages_dir:
        yield
        return
    path = shared_directory(experiment, stage) + LOCK_SUFFIX
    said = False
    while True:
        handle = artifacts.try_lock(path)
        if processes.first_process_value(int(handle is not None)):
            break
        if not said:
            logger.info("Stage %s: waiting for another run, which holds %s, to finish it.",
                        stage, path)
            said = True
        time.sleep(poll_seconds)
    try:
        yield
    finally:
        artifacts.release_lock(handle)
