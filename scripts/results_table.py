"""A sweep's summary as the compact Markdown table of docs/results.md: one row per setting,
each metric as mean ± standard deviation over seeds (in %, for rates).

  python scripts/results_table.py runs/demo/table1 [--metric COLUMN=HEADING ...]
  python scripts/results_table.py runs/demo/table1 --paired A:B [--paired C:D ...]

Reads <sweep_dir>/summary.csv (written by `python -m rso_jax.tools.sweep`) and prints the table; with
--paired, reads results.csv and prints, for each metric, setting A minus setting B seed by seed:
the mean difference with its 95 % interval, the paired t-test's p and the seeds where A is
ahead; then, on the first metric, whether "A > B" held, was reversed, showed no effect as large
as --margin, or cannot be told at this power, and the seeds a paired test needs to see a
difference of --margin at 80 % power (from the measured spread).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

from rso_jax.tools import seed_statistics

DEFAULT_METRICS = {
    "trained.gold_win_rate_vs_sft_target": "gold win rate",
    "trained.proxy_win_rate_vs_sft_target": "proxy win rate",
    "trained.autosxs_win_rate_vs_sft_target": "AutoSxS win rate",
    "trained.gold_reward": "gold reward",
}


def cell(row: dict, column: str) -> str:
    if not row.get(column):
        return "-"
    mean, spread = float(row[column]), float(row.get(column + ".std") or 0.0)
    if "win_rate" in column or "acceptance" in column:
        return f"{100 * mean:.1f} ± {100 * spread:.1f}"
    return f"{mean:.3f} ± {spread:.3f}"


def table(rows: list[dict], metrics: dict[str, str]) -> str:
    columns = list(rows[0])
    axes = columns[:columns.index("seeds")]  # the summary's settings come before "seeds"
    lines = ["| " + " | ".join(axes + ["seeds"] + list(metrics.values())) + " |",
             "|" + "---|" * len(axes) + "---:|" + "---:|" * len(metrics)]
    for row in rows:
        lines.append("| " + " | ".join([row[a] for a in axes] + [row["seeds"]]
                                       + [cell(row, c) for c in metrics]) + " |")
    return "\n".join(lines)


def paired_table(rows: list[dict], pairs: list[tuple[str, str]], metrics: dict[str, str],
                 margin: float = 0.01) -> str:
    """A minus B per seed (settings named by the first axis of results.csv other than SEED, which
    may come first: a sweep runs seed by seed when SEED is its first axis): for each metric the
    mean difference, its 95 % interval, the paired t-test's p and the seeds where A is ahead;
    then, on the first metric, whether "A > B" held (`seed_statistics.verdict` with `margin`)
    and how many seeds a paired test needs to see a difference of `margin` at 80 % power,
    from the measured spread of the differences."""
    axis = next(column for column in rows[0] if column != "SEED")
    by_key = {(row[axis], row.get("SEED", "")): row for row in rows}
    seeds = sorted({row.get("SEED", "") for row in rows})
    first_metric = next(iter(metrics))
    shown_margin = (f"{100 * margin:g} point{'' if 100 * margin == 1 else 's'}"
                    if "win_rate" in first_metric else f"{margin:g}")
    lines = ["| A - B | " + " | ".join(metrics.values())
             + f" | A > B on {metrics[first_metric]} (margin {shown_margin}) "
             "| seeds for 80 % power |",
             "|---|" + "---:|" * len(metrics) + "---|---:|"]
    for first, second in pairs:
        cells, verdict, needed = [], "-", "-"
        for column in metrics:
            common = [s for s in seeds if by_key.get((first, s), {}).get(column)
                      and by_key.get((second, s), {}).get(column)]
            if not common:
                cells.append("-")
                continue
            difference = seed_statistics.paired(
                [float(by_key[(first, s)][column]) for s in common],
                [float(by_key[(second, s)][column]) for s in common])
            win_rate = "win_rate" in column
            cells.append(seed_statistics.describe(difference, 100 if win_rate else 1,
                                                  1 if win_rate else 3))
            if column == first_metric:
                verdict = seed_statistics.verdict(difference.difference, margin)
                if len(common) > 1:
                    needed = str(seed_statistics.seeds_for_power(
                        difference.difference.spread, margin))
        lines.append(f"| {first} - {second} | " + " | ".join(cells) + f" | {verdict} | "
                     f"{needed} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir")
    parser.add_argument("--metric", action="append", default=[], metavar="COLUMN=HEADING",
                        help="a summary column and its heading (no '=' in the heading; "
                             "default: win rates and gold reward)")
    parser.add_argument("--paired", action="append", default=[], metavar="A:B",
                        help="setting A minus setting B, seed by seed (from results.csv)")
    parser.add_argument("--margin", type=float, default=0.01,
                        help="the smallest difference of the first metric that matters, in its "
                             "own units (default 0.01: one point of win rate); sets the "
                             "verdict's 'no effect' band and the power calculation")
    args = parser.parse_args(argv)
    metrics = dict(m.rsplit("=", 1) for m in args.metric) if args.metric else DEFAULT_METRICS
    if args.paired:
        with open(os.path.join(args.sweep_dir, "results.csv")) as stream:
            rows = list(csv.DictReader(stream))
        print(paired_table(rows, [tuple(p.split(":", 1)) for p in args.paired], metrics,
                           args.margin))
        return 0
    path = os.path.join(args.sweep_dir, "summary.csv")
    if not os.path.isfile(path):
        print(f"{path} does not exist: run the sweep (with a SEED axis) first.", file=sys.stderr)
        return 2
    with open(path) as stream:
        rows = list(csv.DictReader(stream))
    if not rows:
        print(f"{path} has no rows.", file=sys.stderr)
        return 2
    print(table(rows, metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
