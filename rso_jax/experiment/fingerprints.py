"""What each stage's output depends on, so that a finished stage is never reused silently.

`stage_settings(experiment, stage)` lists exactly the settings and inputs a stage depends on,
with the stages it reads from by their fingerprints. `fingerprint` hashes that. A finished
stage records both in its DONE marker, and a stage that starts records them in
`settings.json`; `stage_records` compares them with the current experiment before any work and
refuses a work directory whose stages were made with other settings, naming the differences.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Optional

from rso_jax import decoding, vocabularies
from rso_jax.experiment import rounds
from rso_jax.experiment.config import Experiment


def describe(value: Any) -> Any:
    """A JSON-able description of a setting (dataclasses field by field, with their type)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {field.name: describe(getattr(value, field.name))
                  for field in dataclasses.fields(value)}
        return {"type": type(value).__name__, **fields}
    if isinstance(value, dict):
        return {str(key): describe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [describe(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _sampling(experiment: Experiment) -> dict:
    """The sampling settings as the stages decode with them (`StageContext.drawing`): the
    vocabulary's size appears only where it keeps the model's padding rows from being drawn
    (so that stages of a model whose rows are all pieces match those made before it)."""
    pieces = vocabularies.piece_count(experiment.task.vocabulary_file())
    described = describe(decoding.for_vocabulary(experiment.sampling, pieces,
                                                 experiment.policy_config.vocab_size))
    if described["vocabulary_size"] is None:
        del described["vocabulary_size"]
    return described


def _path(path: Optional[str]) -> Optional[str]:
    return None if path is None else os.path.abspath(path)


def _unless_default(**settings) -> dict:
    """Settings added after work directories existed, recorded only when not at their default
    (so that stages made before them still match)."""
    defaults = {field.name: field.default for field in dataclasses.fields(Experiment)}
    return {key: value for key, value in settings.items()
            if value != describe(defaults[key])}


def _own_settings(experiment: Experiment, name: str) -> dict:
    """The settings the work directory's stage `name` (of any round) reads itself, and the
    stages whose outputs it reads."""
    settings = _stage_settings(experiment, rounds.base_stage(name))
    round_index = rounds.round_of(name)
    roles = {"policy": rounds.previous_policy(round_index),
             "reference_policy": rounds.reference_policy(experiment, round_index)}
    if "after" in settings:
        resolved = [roles.get(before) or rounds.stage_name(before, round_index)
                    for before in settings["after"]]
        settings["after"] = list(dict.fromkeys(resolved))  # the first round's SFT once
    if round_index > 1:
        settings["round"] = round_index
    return settings


def _stage_settings(experiment: Experiment, stage: str) -> dict:
    """The settings of `stage` and the stages it reads: by their first-round names, 'policy'
    for the policy the round starts from and 'reference_policy' for its reference."""
    e, lengths = experiment, experiment.lengths
    if stage == "sft":
        if e.sft_checkpoint:
            return {"checkpoint": _path(e.sft_checkpoint), "policy": describe(e.policy_config)}
        return {"task": describe(e.task), "policy": describe(e.policy_config),
                "schedule": describe(e.sft), "init_checkpoint": _path(e.sft_init_checkpoint),
                "prompt_length": lengths.prompt, "response_length": lengths.response}
    if stage == "ranker":
        if e.ranker_checkpoint:
            return {"checkpoint": _path(e.ranker_checkpoint), "ranker": describe(e.ranker_config),
                    **_unless_default(scorer=e.scorer)}
        return {"task": describe(e.task), "ranker": describe(e.ranker_config),
                "schedule": describe(e.ranker), "init_checkpoint": _path(e.ranker_init_checkpoint),
                "ranker_input_length": lengths.ranker_input, "response_length": lengths.response,
                "ranker_sees_context": e.ranker_sees_context, **_unless_default(scorer=e.scorer)}
    if stage == "sample":
        return {"after": ["policy", "sft"], "task": describe(e.task),
                "sampling": _sampling(e),
                **_unless_default(sample_task=describe(e.sample_task)),
                "num_sample_prompts": e.num_sample_prompts, "prompt_length": lengths.prompt,
                "sample_batch_size": e.inference_batch_sizes.sample, "seed": e.seed}
    if stage == "score":
        return {"after": ["sample", "ranker"], "ranker_input_length": lengths.ranker_input,
                "ranker_sees_context": e.ranker_sees_context}
    if stage == "select":
        if not e.needs_samples:
            return {"task": describe(e.task), "selection": describe(e.selection),
                    "num_sample_prompts": e.num_sample_prompts, "prompt_length": lengths.prompt,
                    "response_length": lengths.response}
        return {"after": ["sample", "score", "ranker"], "selection": describe(e.selection)}
    if stage == "reference":
        return {"after": ["select", "reference_policy"]}
    if stage == "preference":
        if not e.selection.makes_pairs:  # SFT on the selected responses: no loss settings
            return {"after": ["select", "policy", "ranker"], "schedule": describe(e.preference),
                    "task": describe(e.task), "num_eval_prompts": e.num_eval_prompts,
                    "sampling": _sampling(e)}
        return {"after": ["select", "reference", "policy", "ranker"],
                "schedule": describe(e.preference),
                "loss": e.loss, "gamma": e.gamma, "label_smoothing": e.label_smoothing,
                **_unless_default(regularization_weight=e.regularization_weight),
                "task": describe(e.task),
                "num_eval_prompts": e.num_eval_prompts, "sampling": _sampling(e)}
    if stage == "evaluate":
        # Its results.json lives in WORK_DIR: with shared stages each WORK_DIR evaluates.
        own = {"work_dir": _path(e.work_dir)} if e.shared_stages_dir else {}
        return {"after": ["preference", "sft", "ranker"], **own,
                "eval_task": describe(e.evaluation_task), "num_eval_prompts": e.num_eval_prompts,
                "sampling": _sampling(e),
                "gold_ranker_checkpoint": _path(e.gold_ranker_checkpoint),
                "gold_ranker": describe(e.gold_ranker_config),
                "autosxs_judge_checkpoint": _path(e.autosxs_judge_checkpoint),
                "autosxs_judge": describe(e.autosxs_judge_config),
                **_unless_default(autosxs_gold_temperature=e.autosxs_gold_temperature),
                **({} if e.eval_best_of_n is None else {  # its samples' draws depend on these
                    "eval_best_of_n": e.eval_best_of_n, "seed": e.seed,
                    "sample_batch_size": e.inference_batch_sizes.sample})}
    raise ValueError(f"Unknown stage {stage!r}.")


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
