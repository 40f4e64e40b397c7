"""What the work directory records of each stage, and when a finished stage may be reused.

A stage that starts writes `settings.json` (its settings and their fingerprint); a stage that
finishes writes `DONE.json` with the same, the size and SHA-256 of each output file, and the
digest of the outputs of each stage it read. A finished stage is reused only when
  - it was made with this experiment's settings (else the run is refused before any work,
    naming the settings that differ: `check_settings`);
  - its outputs are as it wrote them (else it runs again: `find_damaged`, `reason_to_run`);
  - the stages it read from still hold the outputs it read (else it runs again, afresh).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Optional, Sequence

from rso_jax.runtime import atomic_io, processes
from rso_jax.experiment import artifacts, fingerprints
from rso_jax.experiment.config import Experiment
from rso_jax.experiment.stages import STAGES, stage_names

logger = logging.getLogger(__name__)

Damaged = dict[str, list[str]]  # stage -> how its outputs differ from its DONE marker


def recorded_settings(work_dir: str, stage: str) -> Optional[dict]:
    """What a stage in the work directory was made with: from its DONE marker when finished,
    else from the settings it recorded when it started; None for a stage never started."""
    done = artifacts.read_done(work_dir, stage)
    if done is not None:
        return {key: done.get(key) for key in ("settings", "fingerprint", "inputs_read")}
    return _started_settings(work_dir, stage)


def _started_settings(work_dir: str, stage: str) -> Optional[dict]:
    """The settings.json a stage wrote when it (last) started; None when there is none."""
    path = os.path.join(artifacts.stage_dir(work_dir, stage), artifacts.SETTINGS_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as stream:
            return json.load(stream)
    except (OSError, ValueError):
        return None  # written atomically, so only by hand; the stage starts again


def check_settings(experiment: Experiment) -> None:
    """Refuses, before any work, a work directory whose stages were made (or started) with
    other settings than this experiment's, naming the first such stage and its differences."""
    changed = []
    for stage in stage_names(experiment):
        recorded = recorded_settings(experiment.work_dir, stage)
        if recorded is None:
            continue
        current = fingerprints.stage_settings(experiment, stage)
        if recorded.get("fingerprint") != fingerprints.fingerprint(current):
            changed.append((stage, fingerprints.differences(recorded.get("settings") or {},
                                                            current)))
    if not changed:
        return
    stage, found = changed[0]
    listed = "\n".join(f"  {line}" for line in found[:12]) or "  (no settings recorded)"
    later = [name for name, _ in changed[1:]]
    raise ValueError(
        f"WORK_DIR {experiment.work_dir} holds stage {stage} made with other settings than "
        f"this experiment's:\n{listed}\n"
        + (f"and so the stages after it ({', '.join(later)}).\n" if later else "")
        + "Give another WORK_DIR, or delete "
        f"{artifacts.stage_dir(experiment.work_dir, stage)} (and the stages after it) to redo "
        "it with these settings.")


def find_damaged(work_dir: str, stages: Sequence[str] = STAGES) -> Damaged:
    """Finished stages (of the work directory's `stages`) whose outputs are no longer what
    they wrote (each file's size, then its SHA-256, against the DONE marker)."""
    damaged = {}
    for stage in stages:
        done = artifacts.read_done(work_dir, stage)
        if done is None:
            continue
        if not isinstance(done.get("outputs"), dict):
            marker = os.path.join(artifacts.stage_dir(work_dir, stage), artifacts.DONE_FILE)
            damaged[stage] = [f"{marker} lists no outputs"]
            continue
        found = artifacts.damaged_outputs(work_dir, done["outputs"])
        if found:
            damaged[stage] = found
    return damaged


def _outputs_digest(work_dir: str, stage: str) -> Optional[str]:
    done = artifacts.read_done(work_dir, stage)
    if done is None or not isinstance(done.get("outputs"), dict):
        return None
    return artifacts.manifest_digest(done["outputs"])


def inputs_read(experiment: Experiment, stage: str) -> dict[str, Optional[str]]:
    """The digest of the outputs of each stage that `stage` reads, as they are now."""
    return {name: _outputs_digest(experiment.work_dir, name)
            for name in fingerprints.upstream(experiment, stage)}


def changed_inputs(experiment: Experiment, stage: str) -> list[str]:
    """The stages whose outputs changed since `stage` (finished or started) read them; a stage
    never started has read nothing."""
    recorded = recorded_settings(experiment.work_dir, stage)
    if recorded is None:
        return []
    read = recorded.get("inputs_read") or {}
    return [name for name, digest in inputs_read(experiment, stage).items()
            if read.get(name) != digest]


def reason_to_run(experiment: Experiment, stage: str, damaged: Damaged) -> Optional[str]:
    """None when the finished stage can be reused; else why it runs."""
    done = artifacts.read_done(experiment.work_dir, stage)
    if done is None:
        return "running."
    if stage in damaged:
        return ("its outputs changed after it finished (" + "; ".join(damaged[stage][:3])
                + "): running it again.")
    changed = changed_inputs(experiment, stage)
    if changed:
        return (f"stage {' and '.join(changed)}, which it reads, was made again with other "
                "outputs: running it again.")
    return None


def _holds_work(directory: str) -> bool:
    return os.path.isdir(directory) and any(
        not atomic_io.is_leftover(name) for name in os.listdir(directory))


def start(experiment: Experiment, stage: str, damaged: Damaged) -> None:
    """Records that the stage starts. An earlier attempt's work (a training stage's
    checkpoints) is kept for it to resume from, unless that attempt read other outputs of the
    stages before it, or its outputs were damaged after it finished, or nothing records what
    it was made from: then it is deleted, saying so, and the stage starts afresh. (The first
    process does it; the runner's barrier after it keeps the others from reading meanwhile.)"""
    if not processes.is_writer():
        return
    work_dir = experiment.work_dir
    directory = artifacts.stage_dir(work_dir, stage)
    reasons = []
    changed = changed_inputs(experiment, stage)
    if changed:
        reasons.append(f"its work read other outputs of stage {' and '.join(changed)} than "
                       "there are now")
    if stage in damaged:
        reasons.append("its outputs were damaged after it finished, and its checkpoints may "
                       "be too")
    if recorded_settings(work_dir, stage) is None and _holds_work(directory):
        reasons.append("nothing records what its work was made from")
    if reasons and _holds_work(directory):
        logger.warning("Stage %s: deleting %s (%s); the stage starts afresh.", stage, directory,
                       "; ".join(reasons))
        atomic_io.remove_tree(directory)
        for _, copy in artifacts.published_copies(stage):
            if os.path.isfile(os.path.join(work_dir, copy)):
                os.remove(os.path.join(work_dir, copy))
    # (Leftovers at the top of the work directory the runner removes when the run starts.)
    for path in atomic_io.remove_leftovers(directory) if os.path.isdir(directory) else []:
        logger.info("Stage %s: removed %s, left by a write that was interrupted.", stage, path)
    atomic_io.write_json(os.path.join(directory, artifacts.SETTINGS_FILE),
                         _record(experiment, stage))


def mark_done(experiment: Experiment, stage: str, summary: dict) -> None:
    record = _record(experiment, stage)
    # It read the outputs that were there when it started (with shared stages another run may
    # have made one of them again since): those recorded in its settings.json.
    started = _started_settings(experiment.work_dir, stage)
    if started is not None:
        record["inputs_read"] = started.get("inputs_read", record["inputs_read"])
    artifacts.mark_done(experiment.work_dir, stage, {**summary, **record})


def _record(experiment: Experiment, stage: str) -> dict:
    """What a stage records of how it was made: settings, fingerprint, the inputs it read."""
    settings = fingerprints.stage_settings(experiment, stage)
    return {"settings": settings, "fingerprint": fingerprints.fingerprint(settings),
            "inputs_read": inputs_read(experiment, stage)}
