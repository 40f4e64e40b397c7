"""Sweeps: the product of gin settings, run one point after another (or printed as launch
commands for a cluster), and one table of every point's results at the end.

  python -m rso_jax.tools.sweep --gin_file=configs/demo_rso.gin --sweep_dir=runs/gamma \\
      --sweep GAMMA=0.01,0.05,0.5 --sweep SEED=0,1,2
  python -m rso_jax.tools.sweep --sweep_file=configs/sweeps/demo_table1.json --sweep_dir=runs/t1

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
standard deviation over seeds of each other setting. The plots (`rso_jax.tools.plots`) go to
<sweep_dir>/plots/.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shlex
import sys
from typing import Any, Optional, Sequence

from rso_jax.runtime import atomic_io
from rso_jax import main as entry_point
from rso_jax.tools.sweep_points import (POINTS_DIR, Point, Sweep, SweepError, point_bindings,
                                        read_sweep)
from rso_jax.tools.sweep_tables import SEED_AXIS, point_results, summary_rows, table_rows, to_csv, to_markdown

logger = logging.getLogger("rso_jax.tools.sweep")  # also when run as __main__

def point_experiment(sweep: Sweep, point: Point, sweep_dir: str,
                     stages_dir: Optional[str] = None) -> Any:
    """The point's `config.Experiment`, built from its gin files and bindings (gin is left
    clear); SweepError naming the point when they do not build."""
    import gin

    try:
        return entry_point.experiment_from_gin(
            sweep.point_gin_files, point_bindings(sweep, point, sweep_dir, stages_dir))
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
    (`rso_jax.tools.plots`, in <sweep_dir>/plots/); returns the paths written."""
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
    from rso_jax.tools import plots

    return written + plots.sweep_plots(
        sweep_dir, summary, axes,
        [(dict(point.labels), work_dir, result) for point, work_dir, result, _ in results],
        SEED_AXIS)


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rso_jax.tools.sweep", description=__doc__,
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
        print(f"rso_jax.tools.sweep: {error}", file=sys.stderr)
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
            print(f"rso_jax.tools.sweep: {entry_point.stopped_line(stopped)}", file=sys.stderr)
            return stopped.exit_code
    for path in write_report(sweep, points, args.sweep_dir):
        print(f"Wrote {path}")
    if failed:
        print(f"rso_jax.tools.sweep: {len(failed)} point(s) failed: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
