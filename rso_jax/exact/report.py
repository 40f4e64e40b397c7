"""The exact study's report: tables with 95 % intervals over seeds, paired comparisons of the
sources with a verdict on each of RSO's orderings, and figures.

  python -m rso_jax.exact.report runs/exact      # again, from <work_dir>/results.csv

The tilt ratio (`problems.tilt_ratio`) says why a fit is off: 1 when it carries as much of the
reward's expressible direction as pi_r's tilt, below 1 when it is attenuated towards pi_sft.

Writes <work_dir>/summary.md and <work_dir>/figures/{budget,beta,axes}.png. A comparison
"A better than B" is made seed by seed (the same problem and random draws): for the KL to pi_r
on log KL (B's over A's, so a ratio), for the expected reward and the win rate on their
difference; its verdict (`seed_statistics.verdict`) is held, reversed, no effect as large as the
margin, or cannot be told at this power.
"""

from __future__ import annotations

import collections
import csv
import math
import os
import sys
from typing import Optional, Sequence

import numpy as np

from rso_jax.tools import seed_statistics

SUMMARY_FILE = "summary.md"
FIGURES_DIR = "figures"
SOURCE_NAMES = {"direct": "direct", "sft_sample_rank": "sft-sample-rank",
                "rso_sample_rank": "rso-sample-rank", "top_k_over_n": "top-k-over-N",
                "optimal_policy": "pairs from pi_r"}
# The smallest differences that matter: 10 % of KL, 0.02 of reward (unit variance), 1 point.
MARGINS = {"kl_to_optimal": math.log(1.1), "expected_reward": 0.02, "win_rate_vs_sft": 0.01}
# (A, B): "A better than B", the orderings RSO's argument makes or implies.
CLAIMS = (("rso_sample_rank", "sft_sample_rank"), ("rso_sample_rank", "direct"),
          ("sft_sample_rank", "direct"), ("optimal_policy", "sft_sample_rank"),
          ("rso_sample_rank", "top_k_over_n"), ("optimal_policy", "rso_sample_rank"))

Rows = list[dict]


def read_rows(path: str) -> Rows:
    with open(path) as stream:
        return list(csv.DictReader(stream))


def _by_point(rows: Rows) -> dict[tuple, dict[str, np.ndarray]]:
    """(panel, value, source, budget) -> measure -> per-seed values in seed order."""
    grouped: dict[tuple, list[dict]] = collections.defaultdict(list)
    for row in rows:
        grouped[(row["panel"], row["value"], row["source"], int(row["budget"]))].append(row)
    return {key: {name: np.array([float(r[name]) for r in sorted(group, key=lambda r:
                                                                  int(r["seed"]))])
                  for name in group[0] if name not in ("panel", "value", "source", "budget",
                                                       "seed")}
            for key, group in grouped.items()}


def better_by(first: np.ndarray, second: np.ndarray, measure: str
              ) -> seed_statistics.PairedDifference:
    """How much `first` beats `second`, seed by seed: log(KL_second / KL_first) for the KL to
    pi_r, first - second otherwise (positive: first better)."""
    if measure == "kl_to_optimal":
        return seed_statistics.paired(np.log(second), np.log(first))
    return seed_statistics.paired(first, second)


def _cell(values: np.ndarray, measure: str) -> str:
    if not np.all(np.isfinite(values)):
        return "-"
    summary = seed_statistics.interval(values)
    if measure == "win_rate_vs_sft":
        return f"{100 * summary.mean:.1f} [{100 * summary.low:.1f}, {100 * summary.high:.1f}]"
    digits = 4 if measure in ("kl_to_optimal", "kl_to_sft", "regret") else 3
    return f"{summary.mean:.{digits}f} [{summary.low:.{digits}f}, {summary.high:.{digits}f}]"


# Short names of the verdicts in the tables (the legend is under each).
VERDICT_WORDS = {seed_statistics.HELD: "**held**", seed_statistics.REVERSED: "**reversed**",
                 seed_statistics.NO_EFFECT: "equal", seed_statistics.CANNOT_TELL: "unclear"}
VERDICT_LEGEND = ("held / reversed: the 95 % interval of the paired difference lies above / "
                  "below 0; equal: it lies within the margin around 0 (KL: 10 %, reward: 0.02, "
                  "win rate: 1 point); unclear: neither, too few seeds for the spread.")


def _claim_cell(difference: seed_statistics.PairedDifference, measure: str) -> str:
    verdict = VERDICT_WORDS[seed_statistics.verdict(difference.difference, MARGINS[measure])]
    if measure == "kl_to_optimal":  # a ratio of KLs: exp of the mean log ratio
        d = difference.difference
        text = (f"×{math.exp(d.mean):.2f} [{math.exp(d.low):.2f}, {math.exp(d.high):.2f}], "
                f"p = {difference.p_value:.2g}")
    else:
        text = seed_statistics.describe(difference, 100 if measure == "win_rate_vs_sft" else 1,
                                        1 if measure == "win_rate_vs_sft" else 3,
                                        with_ahead=False)
    return f"{text} {verdict}"


def _values(points, panel: str) -> list[str]:
    seen = []
    for key in points:
        if key[0] == panel and key[1] not in seen:
            seen.append(key[1])
    return seen


def _sources(points, panel: str) -> list[str]:
    present = {key[2] for key in points if key[0] == panel}
    return [s for s in SOURCE_NAMES if s in present]


def measure_table(points, panel: str, measure: str, by_budget: bool = False,
                  value: Optional[str] = None) -> str:
    """Rows: the panel's values (or budgets of one value); columns: sources; cells: mean and
    95 % interval over seeds."""
    sources = _sources(points, panel)
    axis = "pairs" if by_budget else panel
    lines = ["| " + " | ".join([axis] + [SOURCE_NAMES[s] for s in sources]) + " |",
             "|---:|" + "---:|" * len(sources)]
    keys = sorted({(k[1], k[3]) for k in points if k[0] == panel
                   and (value is None or k[1] == value)},
                  key=lambda vb: (_values(points, panel).index(vb[0]), vb[1]))
    for row_value, budget in keys:
        cells = [_cell(points[(panel, row_value, s, budget)][measure], measure)
                 if (panel, row_value, s, budget) in points else "-" for s in sources]
        lines.append(f"| {budget if by_budget else row_value} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claims_table(points, panel: str, measure: str, value: Optional[str] = None,
                 claims: Sequence[tuple[str, str]] = CLAIMS) -> str:
    """For each value (or budget), each claim 'A better than B' on one measure, paired."""
    present = set(_sources(points, panel))
    claims = [c for c in claims if set(c) <= present]
    header = "KL(pi_r ‖ pi_theta) of B over A's" if measure == "kl_to_optimal" else \
        f"{measure}: A − B"
    lines = [f"| {panel} | " + " | ".join(f"{SOURCE_NAMES[a]} > {SOURCE_NAMES[b]}"
                                         for a, b in claims) + " |",
             "|---:|" + "---|" * len(claims)]
    keys = sorted({(k[1], k[3]) for k in points if k[0] == panel
                   and (value is None or k[1] == value)},
                  key=lambda vb: (_values(points, panel).index(vb[0]), vb[1]))
    for row_value, budget in keys:
        cells = []
        for first, second in claims:
            a, b = points.get((panel, row_value, first, budget)), points.get(
                (panel, row_value, second, budget))
            cells.append("-" if a is None or b is None else
                         _claim_cell(better_by(a[measure], b[measure], measure), measure))
        label = budget if value is not None else row_value
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return f"({header}; {VERDICT_LEGEND})\n\n" + "\n".join(lines)


def pair_rule_table(points, measure: str) -> str:
    """Tournament against first-round pairs, per source (the pair_rule panel)."""
    lines = ["| source | tournament > first-round |", "|---|---|"]
    for source in _sources(points, "pair_rule"):
        keys = [k for k in points if k[0] == "pair_rule" and k[2] == source]
        by_rule = {k[1]: points[k][measure] for k in keys}
        if {"tournament", "first_round"} <= set(by_rule):
            lines.append(f"| {SOURCE_NAMES[source]} | " + _claim_cell(better_by(
                by_rule["tournament"], by_rule["first_round"], measure), measure) + " |")
    return "\n".join(lines)


def summary(rows: Rows, seeds: int) -> str:
    points = _by_point(rows)
    out = [f"# The exact test of RSO's claim: {seeds} seeds, 95 % intervals", ""]
    out += ["## pi_sft and pi_r themselves (beta of the base point)", "",
            "| misspecification | policy | KL(pi_r ‖ .) | expected reward | win rate vs pi_sft "
            "| KL(. ‖ pi_sft) |", "|---:|---|---:|---:|---:|---:|"]
    for key in sorted(k for k in points if k[0] == "reference"):
        p = points[key]
        out.append(f"| {key[1]} | {key[2]} | " + " | ".join(
            _cell(p[m], m) for m in ("kl_to_optimal", "expected_reward", "win_rate_vs_sft",
                                     "kl_to_sft")) + " |")
    for value in _values(points, "budget"):
        out += ["", f"## Pair budget, misspecification {value}", ""]
        for measure in ("kl_to_optimal", "expected_reward", "win_rate_vs_sft", "tilt_ratio"):
            out += [f"{measure}:", "", measure_table(points, "budget", measure, True, value), ""]
        out += ["Paired comparisons:", "",
                claims_table(points, "budget", "kl_to_optimal", value), "",
                claims_table(points, "budget", "expected_reward", value), ""]
    for panel in ("beta", "num_candidates", "misspecification", "loss", "ranker_correlation"):
        if panel not in {k[0] for k in points}:
            continue
        out += ["", f"## {panel}", ""]
        for measure in ("kl_to_optimal", "expected_reward", "win_rate_vs_sft", "tilt_ratio"):
            out += [f"{measure}:", "", measure_table(points, panel, measure), ""]
        if panel == "beta":
            out += ["acceptance rate (rso-sample-rank):", "",
                    measure_table({k: v for k, v in points.items()
                                   if k[2] == "rso_sample_rank"}, panel, "acceptance_rate"), ""]
        out += ["Paired comparisons:", "", claims_table(points, panel, "kl_to_optimal"), "",
                claims_table(points, panel, "expected_reward"), ""]
    if "pair_rule" in {k[0] for k in points}:
        out += ["", "## Tournament against first-round pairs", ""]
        for measure in ("kl_to_optimal", "expected_reward"):
            out += [f"{measure}:", "", pair_rule_table(points, measure), ""]
    return "\n".join(out) + "\n"


def write_report(results_path: str, work_dir: str) -> str:
    """Writes summary.md and the figures from results.csv; returns summary.md's path."""
    from rso_jax.runtime import atomic_io
    from rso_jax.exact import figures

    rows = read_rows(results_path)
    seeds = len({row["seed"] for row in rows})
    path = os.path.join(work_dir, SUMMARY_FILE)
    atomic_io.write_text(path, summary(rows, seeds))
    figures.draw_all(_by_point(rows), os.path.join(work_dir, FIGURES_DIR))
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m rso_jax.exact.report WORK_DIR (holding results.csv)",
              file=sys.stderr)
        return 2
    results_path = os.path.join(args[0], "results.csv")
    if not os.path.isfile(results_path):
        print(f"{results_path} does not exist: run the study first (python -m rso_jax.main "
              "--gin_file=configs/exact/rso_claim.gin).", file=sys.stderr)
        return 2
    print(write_report(results_path, args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
