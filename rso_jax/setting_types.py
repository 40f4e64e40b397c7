"""The type check of a config dataclass's settings, naming the setting the user gives (its gin
macro) when a value bound in gin has the wrong type: `--gin.BETA="'abc'"`, or a macro bound to
a call that returns ''. Without it the value fails later, far from its name
(`invalid literal for int() with base 10: ''`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

_SIMPLE_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def check_types(instance: Any, macros: Mapping[str, str]) -> None:
    """Raises a ValueError naming the setting when a field annotated with a simple type (int,
    float, str, bool; not Optional ones) holds another type (a bool is no int or float).

    Args:
      instance: a dataclass instance.
      macros: the gin macro that sets each field, named in the error (else 'Class.field').
    """
    for field in dataclasses.fields(instance):
        type_name = field.type if isinstance(field.type, str) else getattr(field.type,
                                                                           "__name__", "")
        allowed = _SIMPLE_TYPES.get(type_name)
        value = getattr(instance, field.name)
        if allowed and (not isinstance(value, allowed)
                        or (isinstance(value, bool) and bool not in allowed)):
            name = macros.get(field.name, f"{type(instance).__name__}.{field.name}")
            raise ValueError(f"{name} must be of type {type_name}, got "
                             f"{type(value).__name__} {value!r}.")
