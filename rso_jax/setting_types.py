"""The name a user gives a config dataclass's setting (its gin macro) and the type check that
names it when a value bound in gin has the wrong type: `--gin.BETA="'abc'"`, or a macro bound to
a call that returns ''. Without it the value fails later, far from its name
(`invalid literal for int() with base 10: ''`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from rso_jax import gin_macros

_SIMPLE_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def setting_name(instance: Any, field: str, scope: str = "") -> str:
    """How a user sets `field` of `instance` (a config object, or a function's name for its
    parameter): the macro that the blocks under gin/ bind it to (`gin_macros.macro_setting`),
    else 'Class.field'.

    Args:
      instance: the config object, or a string '<module>.<name>' as gin files write it.
      field: the field or parameter.
      scope: the gin scope its bindings are in ('sft' for the SFT stage's TrainingSchedule).
    """
    if isinstance(instance, str):
        configurable = owner = instance
    else:
        owner = type(instance).__name__
        configurable = f"{type(instance).__module__.rsplit('.', 1)[-1]}.{owner}"
    return gin_macros.macro_setting(configurable, field, scope) or f"{owner}.{field}"


def check_types(instance: Any, scope: str = "") -> None:
    """Raises a ValueError naming the setting (`setting_name`) when a field annotated with a
    simple type (int, float, str, bool; not Optional ones) holds another type (a bool is no int
    or float)."""
    for field in dataclasses.fields(instance):
        type_name = field.type if isinstance(field.type, str) else getattr(field.type,
                                                                           "__name__", "")
        allowed = _SIMPLE_TYPES.get(type_name)
        value = getattr(instance, field.name)
        if allowed and (not isinstance(value, allowed)
                        or (isinstance(value, bool) and bool not in allowed)):
            raise ValueError(f"{setting_name(instance, field.name, scope)} must be of type "
                             f"{type_name}, got {type(value).__name__} {value!r}.")
