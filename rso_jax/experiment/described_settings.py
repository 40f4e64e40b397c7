"""Settings as a stage's fingerprint records them: JSON-able descriptions, absolute paths,
settings recorded only away from their defaults, and the sampling settings as decoded."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from rso_jax.data import vocabularies
from rso_jax.sampling import decoding
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


def sampling(experiment: Experiment) -> dict:
    """The sampling settings as the stages decode with them (`StageContext.drawing`): the
    vocabulary's size appears only where it keeps the model's padding rows from being drawn
    (so that stages of a model whose rows are all pieces match those made before it)."""
    pieces = vocabularies.piece_count(experiment.task.vocabulary_file())
    described = describe(decoding.for_vocabulary(experiment.sampling, pieces,
                                                 experiment.policy_config.vocab_size))
    if described["vocabulary_size"] is None:
        del described["vocabulary_size"]
    return described


def absolute_path(path: Optional[str]) -> Optional[str]:
    return None if path is None else os.path.abspath(path)


def unless_default(**settings) -> dict:
    """Settings added after work directories existed, recorded only when not at their default
    (so that stages made before them still match)."""
    defaults = {field.name: field.default for field in dataclasses.fields(Experiment)}
    return {key: value for key, value in settings.items()
            if value != describe(defaults[key])}
