"""Sweeps: the product of gin settings, run one point after another (or printed as launch
commands for a cluster), and one table of every point's results at the end.

  python -m rso_jax.sweep --gin_file=configs/demo_rso.gin --sweep_dir=runs/gamma \\
      --sweep GAMMA=0.01,0.05,0.5 --sweep SEED=0,1,2
  python -m rso_jax.sweep --sweep_file=configs/sweeps/demo_table1.json --sweep_dir=runs/t1

Each point is one experiment in <sweep_dir>/points/<point>, and every point shares
<sweep_dir>/stages (SHARED_STAGES_DIR, `experiment.shared_stages`): a stage the points agree
on (the SFT policy, the ranker and the samples of one seed) runs once. Sweeps given the same
--stages_dir share it too (configs/sweeps/: every demo sweep trains one SFT policy a seed).

A sweep file (JSON) gives the gin files, bindings for every point, and the axes; an axis is
either a list of values of one macro or a mapping from a name to the bindings of that point:

  {"gin_files": ["configs/demo_rso.gin"], "bindings": {"PREFERENCE_STEPS": 200},
   "axes": [{"name": "setting", "values": {"raft": {"SELECTION": "raft"},
                                            "direct_hinge": {"SELECTION": "direct",
                                                             "LOSS": "hinge"}}},
            {"name": "SEED", "values": [0, 1, 2]}]}

A sweep file may also name its shared stages directory ("stages_dir", relative to where the
sweep runs; --stages_dir overrides it). JSON strings are gin strings (write "raft", not "'raft'"); a string that starts with '@' or '%'
is a gin reference. --sweep NAME=V1,V2 adds an axis whose values are gin literals as on the
command line (--sweep LOSS="'hinge','sigmoid_norm'"), --gin.NAME=VALUE a binding for every
point.

--tiny and --builtin_task shrink every point, or move it to the built-in task, as they do
`python -m rso_jax.main` (its printed command carries them too).

--print_commands prints each point's `python -m rso_jax.main` command instead of running it
(they may run at once: a point waits for a shared stage another one holds); --report then
writes the table of what they wrote. The table: <sweep_dir>/results.csv and results.md, one
row per point (each policy's metrics, the select stage's summary such as its acceptance rate,
best-of-N at inference); with a SEED axis also summary.csv and summary.md, the mean and
standard deviation over seeds of each other setting. The plots (`rso_jax.plots`) go to
<sweep_dir>/plots/.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import itertools
import json
import logging
import os
import re
import shlex
import sys
from typing import Any, Optional, Sequence

from rso_jax.runtime import atomic_io
from rso_jax import main as entry_point
from rso_jax.sweep_tables import (SEED_AXIS, point_results, summary_rows, table_rows, to_csv,
                                  to_markdown)

logger = logging.getLogger("rso_jax.sweep")  # also when run as __main__

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


def point_experiment(sweep: Sweep, point: Point, sweep_dir: str,
                     stages_dir: Optional[str] = None) -> Any:
    """The point's `config.Experiment`, built from its gin files and bindings (gin is left
    clear); SweepError naming the point when they do not build."""
    import gin
    from rso_jax.experiment import config

    gin.clear_config()
    try:
        entry_point.configure_gin(sweep.point_gin_files,
                                  point_bindings(sweep, point, sweep_dir, stages_dir))
        return gin.get_configurable(config.Experiment)()
    except Exception as error:
        message = entry_point.without_gin_notes(error)
        raise SweepError(f"Point {point.name}: {message}") from error
    finally:
        gin.clear_config()


def check_points(sweep: Sweep, points: Sequence[Point], sweep_dir: str,
                 stages_dir: Optional[str] = None) -> None:
    """Builds every point's experiment before any runs: a bad binding fails now, naming the
    point, not hours in."""
    for point in points:
        point_experiment(sweep, point, sweep_dir, stages_dir)


def command(sweep: Sweep, point: Point, sweep_dir: str, stages_dir: Optional[str] = None) -> str:
    args = ["python", "-m", "rso_jax.main", *(f"--gin_file={f}" for f in sweep.gin_files),
            *sweep.switches]
    args += [f"--gin_bindings={b}" for b in point_bindings(sweep, point, sweep_dir, stages_dir)]
    return shlex.join(args)


def run_points(sweep: Sweep, points: Sequence[Point], sweep_dir: str,
               stages_dir: Optional[str] = None) -> list[str]:
    """Runs the points in order in this process (compiled functions serve every point that
    has their shapes); returns the names of those that failed (each is logged and the sweep
    goes on). Ctrl-C or SIGTERM stops the sweep (`stop_signals`): run it again to resume."""
    import gin
    from rso_jax.runtime import stop_signals

    failed = []
    for index, point in enumerate(points):
        logger.info("Point %d/%d: %s", index + 1, len(points), point.name)
        gin.clear_config()
        entry_point.configure_gin(sweep.point_gin_files,
                                  point_bindings(sweep, point, sweep_dir, stages_dir))
        try:
            gin.get_configurable(entry_point.run)()
        except stop_signals.Stopped:
            raise
        except Exception as error:  # a setting, a NaN loss, a device error: the next point
            logger.error("Point %s failed: %s: %s", point.name, type(error).__name__,
                         entry_point.without_gin_notes(error))
            failed.append(point.name)
        finally:
            gin.clear_config()
            _forget_file_data()
    return failed


def _forget_file_data() -> None:
    """Drops the records file and seqio tasks keep in memory (their caches key on the task
    object, which each point builds anew, so a long sweep would keep every point's copy)."""
    from rso_jax.data import file_tasks, seqio_task

    for task_class in (file_tasks.FileTask, seqio_task.SeqioTask):
        task_class.sft_examples.cache_clear()
        task_class.comparisons.cache_clear()


def write_report(sweep: Sweep, points: Sequence[Point], sweep_dir: str) -> list[str]:
    """Writes results.csv/.md (and summary.csv/.md over seeds) and the plots
    (`rso_jax.plots`, in <sweep_dir>/plots/); returns the paths written."""
    results = point_results(points, os.path.join(sweep_dir, POINTS_DIR))
    rows = table_rows(results)
    tables = [("results", rows)]
    axes = [name for name, _ in sweep.axes]
    summary = summary_rows(rows, axes)
    if SEED_AXIS in axes:
        tables.append(("summary", summary))
    written = []
    for name, table in tables:
        for suffix, text in ((".csv", to_csv(table)), (".md", to_markdown(table))):
            path = os.path.join(sweep_dir, name + suffix)
            atomic_io.write_text(path, text)
            written.append(path)
    if importlib.util.find_spec("matplotlib") is None:  # a dependency, but an image may lack it
        logger.warning("No plots: matplotlib is not installed (pip install matplotlib).")
        return written
    from rso_jax import plots

    return written + plots.sweep_plots(
        sweep_dir, summary, axes,
        [(dict(point.labels), work_dir, result) for point, work_dir, result, _ in results],
        SEED_AXIS)


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rso_jax.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep_dir", required=True,
                        help="where the points and their shared stages go")
    parser.add_argument("--stages_dir",
                        help="the shared stages (default: the sweep file's stages_dir, else "
                             "<sweep_dir>/stages): sweeps that give the same one share their "
                             "SFT policies, rankers and samples")
    parser.add_argument("--sweep_file", help="a JSON sweep file (gin_files, bindings, axes)")
    parser.add_argument("--gin_file", action="append", default=[],
                        help="gin file of every point (after the sweep file's)")
    parser.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2",
                        help="an axis: a macro and its values (repeatable)")
    parser.add_argument("--tiny", action="store_true",
                        help="every point as `rso_jax.main --tiny` runs it (one CPU minute)")
    parser.add_argument("--builtin_task", action="store_true",
                        help="every point on the built-in task, as `rso_jax.main "
                             "--builtin_task` runs it (no data files)")
    parser.add_argument("--print_commands", action="store_true",
                        help="print each point's command instead of running it")
    parser.add_argument("--report", action="store_true",
                        help="only write the table of the points' results")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("rso_jax").setLevel(logging.INFO)
    parser = _argument_parser()
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    bindings, unknown = entry_point.gin_flag_bindings(rest)
    if unknown:
        parser.error(f"unrecognised argument {unknown[0]!r}; bindings are --gin.NAME=VALUE")
    from rso_jax.runtime import cpu_tuning

    cpu_tuning.restrict_ynnpack_to_dots()  # before any JAX computation; CPU backend only
    try:
        sweep = read_sweep(args.sweep_file, args.gin_file, bindings, args.sweep,
                           args.builtin_task, args.tiny)
        points = sweep.points()
        stages_dir = args.stages_dir or sweep.stages_dir
        if not args.report:
            check_points(sweep, points, args.sweep_dir, stages_dir)
    except (SweepError, entry_point.GinConfigError) as error:
        print(f"rso_jax.sweep: {error}", file=sys.stderr)
        return 2
    if args.print_commands:
        for point in points:
            print(command(sweep, point, args.sweep_dir, stages_dir))
        return 0
    failed = []
    if not args.report:
        import jax
        from rso_jax.runtime import stop_signals

        if not jax.config.jax_compilation_cache_dir:  # points recompile the same functions
            jax.config.update("jax_compilation_cache_dir",
                              os.path.abspath(os.path.join(args.sweep_dir, "compilation_cache")))
        try:
            with stop_signals.listening():
                failed = run_points(sweep, points, args.sweep_dir, stages_dir)
        except stop_signals.Stopped as stopped:
            print(f"rso_jax.sweep: {entry_point.stopped_line(stopped)}", file=sys.stderr)
            return stopped.exit_code
    for path in write_report(sweep, points, args.sweep_dir):
        print(f"Wrote {path}")
    if failed:
        print(f"rso_jax.sweep: {len(failed)} point(s) failed: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
