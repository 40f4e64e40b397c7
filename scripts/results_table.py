"""A sweep's summary as the compact Markdown table of docs/results.md: one row per setting,
each metric as mean ± standard deviation over seeds (in %, for rates).

  python scripts/results_table.py runs/demo/table1 [--metric COLUMN=NAME ...]

Reads <sweep_dir>/summary.csv (written by `python -m rso_jax.sweep`); prints the table.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir")
    parser.add_argument("--metric", action="append", default=[], metavar="COLUMN=HEADING",
                        help="a summary column and its heading (no '=' in the heading; "
                             "default: win rates and gold reward)")
    args = parser.parse_args(argv)
    path = os.path.join(args.sweep_dir, "summary.csv")
    if not os.path.isfile(path):
        print(f"{path} does not exist: run the sweep (with a SEED axis) first.", file=sys.stderr)
        return 2
    with open(path) as stream:
        rows = list(csv.DictReader(stream))
    if not rows:
        print(f"{path} has no rows.", file=sys.stderr)
        return 2
    metrics = dict(m.rsplit("=", 1) for m in args.metric) if args.metric else DEFAULT_METRICS
    print(table(rows, metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
