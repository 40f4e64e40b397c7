"""A sweep's points: the sweep file (JSON) or --sweep axes read into the product of their
values, each point with its name, bindings, WORK_DIR and shared stages directory
(`tools.sweep` runs them; its docstring gives the file's format)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
from typing import Any, Optional, Sequence

from rso_jax import main as entry_point


POINTS_DIR = "points"
STAGES_DIR = "stages"


class SweepError(ValueError):
    """A sweep file, axis or binding that cannot be used."""


@dataclasses.dataclass(frozen=True)
class Point:
    """One experiment of the sweep: its value on each axis and its gin bindings."""

    labels: tuple[tuple[str, str], ...]  # (axis, value label) in axis order
    bindings: tuple[str, ...]  # 'NAME = VALUE'

    @property
    def name(self) -> str:
        """The point's directory name: 'raft.SEED=0' (labels joined by '.')."""
        parts = [label if isinstance(axis, str) and not axis.isupper() else f"{axis}={label}"
                 for axis, label in self.labels]
        return re.sub(r"[^\w=.,+-]", "_", ".".join(parts))


@dataclasses.dataclass(frozen=True)
class Sweep:
    gin_files: tuple[str, ...]
    bindings: tuple[str, ...]
    axes: tuple[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]], ...]  # name, (label, bindings)
    stages_dir: Optional[str] = None  # the sweep file's; --stages_dir overrides it
    builtin_task: bool = False  # every point on the built-in task (rso_jax.main --builtin_task)
    tiny: bool = False  # every point shrunk to a CPU-minute run (rso_jax.main --tiny)

    @property
    def switches(self) -> tuple[str, ...]:
        """The flags of `rso_jax.main` that every point's command carries."""
        return tuple(flag for flag, on in (("--builtin_task", self.builtin_task),
                                           ("--tiny", self.tiny)) if on)

    @property
    def point_gin_files(self) -> list[str]:
        """What every point parses: the gin files, then those of the switches."""
        return entry_point.experiment_gin_files(self.gin_files, self.builtin_task, self.tiny)

    def points(self) -> list[Point]:
        found = []
        for choice in itertools.product(*(values for _, values in self.axes)):
            labels = tuple((axis, label) for (axis, _), (label, _) in zip(self.axes, choice))
            bindings = tuple(b for _, point_bindings in choice for b in point_bindings)
            found.append(Point(labels, bindings))
        names = [point.name for point in found]
        hidden = [name for name in names if name.startswith(".")]
        if hidden:
            raise SweepError(f"A point would be named {hidden[0]!r}: give the axes' values "
                             "names that do not start with '.'.")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise SweepError(f"Two points of the sweep would share the directory {repeated[0]}; "
                             "give the axes' values distinct names.")
        return found


def gin_literal(value: Any) -> str:
    """A JSON value of a sweep file as gin reads it."""
    if isinstance(value, str):
        return value if value and value[0] in "@%" else repr(value)
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, list):
        return "(" + "".join(f"{gin_literal(item)}, " for item in value) + ")"
    if isinstance(value, dict):
        items = (f"{gin_literal(key)}: {gin_literal(item)}" for key, item in value.items())
        return "{" + ", ".join(items) + "}"
    raise SweepError(f"{value!r} is not a value a sweep file can give.")


def split_top_level(text: str) -> list[str]:
    """'0.1,(1, 2),"a,b"' -> ['0.1', '(1, 2)', '"a,b"']: commas outside brackets and quotes."""
    parts, depth, quote, current = [], 0, None, ""
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        current += char
    parts.append(current.strip())
    return parts


def command_line_axis(text: str) -> tuple[str, tuple]:
    """--sweep NAME=V1,V2 -> (NAME, ((V1, ('NAME = V1',)), ...))."""
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
        raise SweepError(f"--sweep {text!r}: write --sweep NAME=VALUE1,VALUE2 with NAME a gin "
                         "macro (upper case), e.g. --sweep BETA=0.1,0.5,1.")
    labels = [value for value in split_top_level(values) if value]
    if not labels:
        raise SweepError(f"--sweep {text!r} gives no values.")
    return name, tuple((label.strip("'\""), (f"{name} = {label}",)) for label in labels)


def file_axis(axis: Any, path: str) -> tuple[str, tuple]:
    if not isinstance(axis, dict) or set(axis) != {"name", "values"}:
        raise SweepError(f"{path}: each axis is {{\"name\": ..., \"values\": [...] or "
                         f"{{name: bindings}}}}; got {axis!r}.")
    name, values = axis["name"], axis["values"]
    if isinstance(values, list) and values:
        return name, tuple((str(value), (f"{name} = {gin_literal(value)}",))
                           for value in values)
    if isinstance(values, dict) and values and all(isinstance(v, dict) for v in values.values()):
        return name, tuple((label, tuple(f"{key} = {gin_literal(value)}"
                                          for key, value in bindings.items()))
                           for label, bindings in values.items())
    raise SweepError(f"{path}: the values of axis {name!r} must be a non-empty list of values "
                     "or a mapping from names to bindings.")


def read_sweep(sweep_file: Optional[str], gin_files: Sequence[str], bindings: Sequence[str],
               axes: Sequence[str], builtin_task: bool = False, tiny: bool = False) -> Sweep:
    spec: dict = {}
    if sweep_file:
        try:
            with open(sweep_file) as stream:
                spec = json.load(stream)
        except (OSError, ValueError) as error:
            raise SweepError(f"Sweep file {sweep_file} could not be read: {error}") from error
        unknown = set(spec) - {"gin_files", "bindings", "axes", "stages_dir", "about"}
        if unknown:
            raise SweepError(f"{sweep_file}: unknown keys {sorted(unknown)}; a sweep file has "
                             "gin_files, bindings, axes (and stages_dir, about).")
    files = tuple(spec.get("gin_files", [])) + tuple(gin_files)
    if not files:
        files = (entry_point.DEFAULT_GIN_FILE,)
    every = tuple(f"{k} = {gin_literal(v)}" for k, v in spec.get("bindings", {}).items())
    all_axes = tuple(file_axis(axis, sweep_file) for axis in spec.get("axes", []))
    all_axes += tuple(command_line_axis(text) for text in axes)
    names = [name for name, _ in all_axes]
    if len(set(names)) != len(names):
        raise SweepError(f"The axes {names} repeat a name.")
    if not all_axes:
        raise SweepError("The sweep has no axes: give --sweep NAME=V1,V2 or a --sweep_file "
                         "with axes.")
    stages_dir = spec.get("stages_dir")
    if stages_dir is not None and not (isinstance(stages_dir, str) and stages_dir):
        raise SweepError(f"{sweep_file}: stages_dir must be a directory path, got "
                         f"{stages_dir!r}.")
    return Sweep(files, every + tuple(bindings), all_axes, stages_dir, builtin_task, tiny)


def point_bindings(sweep: Sweep, point: Point, sweep_dir: str,
                   stages_dir: Optional[str] = None) -> list[str]:
    """The point's bindings, its WORK_DIR and the shared stages (`stages_dir`, by default
    <sweep_dir>/stages)."""
    sweep_dir = os.path.abspath(sweep_dir)  # printed commands run from anywhere
    work_dir = os.path.join(sweep_dir, POINTS_DIR, point.name)
    stages_dir = os.path.abspath(stages_dir or os.path.join(sweep_dir, STAGES_DIR))
    return [*sweep.bindings, *point.bindings, f"WORK_DIR = {work_dir!r}",
            f"SHARED_STAGES_DIR = {stages_dir!r}"]
