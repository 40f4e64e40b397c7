"""What each stage's output depends on, so that a finished stage is never reused silently.

`stage_settings(experiment, stage)` lists exactly the settings and inputs a stage depends on
(as its `stage.Stage` record declares them), with the stages it reads from by their
fingerprints. `fingerprint` hashes that. A finished stage records both in its DONE marker,
and a stage that starts records them in `settings.json`; `stage_records` compares them with the current experiment before any work and
refuses a work directory whose stages were made with other settings, naming the differences.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from rso_jax.experiment import rounds, stages
from rso_jax.experiment.stage import POLICY, REFERENCE_POLICY
from rso_jax.experiment.config import Experiment


def _own_settings(experiment: Experiment, name: str) -> dict:
    """The settings the work directory's stage `name` (of any round) reads itself (its
    record's), and as 'after' the stages whose outputs it reads."""
    record = stages.record(name)
    settings = dict(record.settings(experiment))
    round_index = rounds.round_of(name)
    roles = {POLICY: rounds.previous_policy(round_index),
             REFERENCE_POLICY: rounds.reference_policy(experiment, round_index)}
    reads = [roles.get(before) or rounds.stage_name(before, round_index)
             for before in record.reads(experiment)]
    if reads:
        settings["after"] = list(dict.fromkeys(reads))  # the first round's SFT once
    if round_index > 1:
        settings["round"] = round_index
    return settings


def fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def upstream(experiment: Experiment, stage: str) -> list[str]:
    """The stages whose outputs `stage` reads."""
    return list(_own_settings(experiment, stage).get("after", []))


def stage_settings(experiment: Experiment, stage: str) -> dict:
    """A stage's own settings, with each stage it reads from replaced by its fingerprint."""
    settings = _own_settings(experiment, stage)
    upstream = settings.pop("after", [])
    if upstream:
        settings["inputs"] = {name: fingerprint(stage_settings(experiment, name))
                              for name in upstream}
    return settings


def differences(recorded: Any, current: Any, prefix: str = "") -> list[str]:
    """'key: recorded -> current' for every leaf that differs (dicts compared key by key)."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        found = []
        for key in sorted(set(recorded) | set(current)):
            found += differences(recorded.get(key, "<absent>"), current.get(key, "<absent>"),
                                 f"{prefix}{key}.")
        return found
    if recorded != current:
        return [f"{prefix[:-1]}: {json.dumps(recorded)} -> {json.dumps(current)}"]
    return []
