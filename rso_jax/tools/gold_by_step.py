"""Gold figures of every kept preference checkpoint of a sweep's points, not only of the one
kept for its proxy win rate:

  python -m rso_jax.tools.gold_by_step --sweep_file=configs/sweeps/demo_powered.json \\
      --sweep_dir=runs/demo_powered/core --steps=200,300,400
  python scripts/results_table.py runs/demo_powered/core/gold_by_step/step_300 --paired=A:B

The evaluate stage judges the checkpoint that preference training kept for its proxy win rate
on the validation prompts (PREFERENCE_EVAL_EVERY). Which step that is varies from seed to seed,
and where the proxy and the gold reward disagree that choice adds a spread of its own to the
comparison of two settings. For each point and each step this decodes the evaluate stage's
held-out prompts greedily with that step's checkpoint (`WORK_DIR/preference/checkpoints/<step>`:
training keeps the newest three) and judges the decodes as the evaluate stage does: the gold
win rate against the SFT targets and the mean gold reward. It writes
<sweep_dir>/gold_by_step/step_<N>/results.csv (and .md), one row per point with the sweep
table's axes and columns, so that `scripts/results_table.py` reads it as a sweep's.

The sweep is given as to `python -m rso_jax.tools.sweep` (--sweep_file, --gin_file, --sweep,
--gin.NAME=VALUE); its points must have finished their preference stage.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

import numpy as np

from rso_jax.runtime import atomic_io
from rso_jax import main as entry_point
from rso_jax.tools import sweep as sweep_lib, sweep_points
from rso_jax.tools.sweep_tables import to_csv, to_markdown

logger = logging.getLogger("rso_jax.tools.gold_by_step")
OUTPUT_DIR = "gold_by_step"


class GoldByStepError(RuntimeError):
    """A point without the checkpoint asked for, or a task without gold figures."""


def checkpoint_params(context, step: int):
    """The policy parameters of preference training's checkpoint at `step` (checked against
    its checksums, `checkpoint_resume.step_params`), on their shards."""
    import jax
    from rso_jax.training import checkpoint_resume

    directory = os.path.join(context.directory("preference"), checkpoint_resume.CHECKPOINTS_DIR)
    try:
        params = checkpoint_resume.step_params(directory, step)
    except ValueError as error:
        raise GoldByStepError(
            f"{context.experiment.work_dir}: preference training kept {error}. Ask for kept "
            "steps, or run the point's preference stage first.") from error
    config = context.model_config("preference")
    return jax.device_put(params, context.partitioner.param_shardings(config))


class HeldOutGold:
    """The evaluate stage's held-out prompts and gold judge of one point (read once), and the
    gold figures of a policy's greedy decodes of them."""

    def __init__(self, context):
        from rso_jax.experiment.stages import evaluate

        self.context = context
        task, self.contexts, self.targets, self.prompts = evaluate.held_out(context)
        self.judge = evaluate.GoldJudge(context, task)
        if self.judge.source is None:
            raise GoldByStepError(
                f"The task {task.name!r} has no gold reward program and no "
                "GOLD_RANKER_CHECKPOINT is given: there is no gold figure to compute.")

    def figures(self, params) -> dict:
        """The win rate against the SFT targets and the mean gold reward (None without a
        program), in the sweep table's columns."""
        texts = self.context.decode_checked(self.context.greedy(params, self.prompts),
                                            "the checkpoint's greedy decodes")
        rewards = self.judge.rewards(self.contexts, texts)
        return {"trained.gold_win_rate_vs_sft_target": self.judge.win_rate(self.contexts, texts,
                                                                           self.targets),
                "trained.gold_reward": None if rewards is None else float(np.mean(rewards))}


def point_rows(sweep: sweep_points.Sweep, point: sweep_points.Point, sweep_dir: str,
               stages_dir: Optional[str], steps: Sequence[int]) -> dict[int, dict]:
    """Per step, the point's row: its axes' labels and the gold figures of that checkpoint."""
    from rso_jax import partitioning
    from rso_jax.experiment.context import StageContext

    experiment = sweep_lib.point_experiment(sweep, point, sweep_dir, stages_dir)
    context = StageContext(experiment, partitioning.create_partitioner())
    held_out = HeldOutGold(context)
    rows = {}
    for step in steps:
        rows[step] = {**dict(point.labels), **held_out.figures(checkpoint_params(context, step))}
        logger.info("%s, step %d: %s", point.name, step, rows[step])
    return rows


def write_tables(sweep_dir: str, rows_by_step: dict[int, list[dict]]) -> list[str]:
    written = []
    for step, rows in rows_by_step.items():
        directory = os.path.join(sweep_dir, OUTPUT_DIR, f"step_{step}")
        for suffix, text in ((".csv", to_csv(rows)), (".md", to_markdown(rows))):
            path = os.path.join(directory, "results" + suffix)
            atomic_io.write_text(path, text)
            written.append(path)
    return written


def parse_steps(text: str) -> list[int]:
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        steps = []
    if not steps or any(step <= 0 for step in steps):
        raise argparse.ArgumentTypeError(
            f"--steps={text!r}: give positive training steps separated by commas, e.g. "
            "--steps=200,300,400")
    return steps


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("rso_jax").setLevel(logging.INFO)
    parser = argparse.ArgumentParser(prog="python -m rso_jax.tools.gold_by_step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep_dir", required=True)
    parser.add_argument("--stages_dir", help="as given to the sweep (default: its file's)")
    parser.add_argument("--sweep_file")
    parser.add_argument("--gin_file", action="append", default=[])
    parser.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2")
    parser.add_argument("--steps", type=parse_steps, required=True,
                        help="the checkpoints' steps, separated by commas")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    bindings, unknown = entry_point.gin_flag_bindings(rest)
    if unknown:
        parser.error(f"unrecognised argument {unknown[0]!r}; bindings are --gin.NAME=VALUE")
    from rso_jax.runtime import cpu_tuning

    cpu_tuning.restrict_ynnpack_to_dots()  # before any JAX computation; CPU backend only
    import jax

    if not jax.config.jax_compilation_cache_dir:  # the sweep's own cache: the same functions
        jax.config.update("jax_compilation_cache_dir", os.path.abspath(
            os.path.join(args.sweep_dir, "compilation_cache")))
    rows_by_step: dict[int, list[dict]] = {step: [] for step in args.steps}
    try:
        sweep = sweep_points.read_sweep(args.sweep_file, args.gin_file, bindings, args.sweep)
        for point in sweep.points():
            rows = point_rows(sweep, point, args.sweep_dir, args.stages_dir or sweep.stages_dir,
                              args.steps)
            for step, row in rows.items():
                rows_by_step[step].append(row)
    except (sweep_points.SweepError, entry_point.GinConfigError, GoldByStepError) as error:
        print(f"rso_jax.tools.gold_by_step: {error}", file=sys.stderr)
        return 2
    for path in write_tables(args.sweep_dir, rows_by_step):
        print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
