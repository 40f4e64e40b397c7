"""Plots of a sweep (PNG, matplotlib): what a researcher looks at after one. The sweep
(`rso_jax.tools.sweep`, also with --report) draws them at its end into <sweep_dir>/plots/:

  <AXIS>.png              the trained policy's win rates against the SFT targets (gold, proxy,
                          AutoSxS; mean and standard deviation over seeds) against each axis of
                          the sweep (a line for a numeric axis, e.g. RSO's Figure 3 for BETA
                          and GAMMA; bars for named settings); the SFT policy's as a dashed line
  <AXIS>.acceptance.png   rejection sampling's acceptance rate against a numeric axis (when the
                          points ran 'rso' selection)
  rewards.png             reward distributions of the sampled candidates and of the responses
                          each point kept (its select stage's kept.npz), proxy and gold
  best_of_n.png           best-of-N at inference (EVAL_BEST_OF_N): gold reward and KL against N
  training/<point>.png    each training stage's loss (and evaluations) against the step (the
                          first round's stages)

Each function takes the rows or files a sweep wrote and one output path; matplotlib is imported
only here (the accelerator image has none).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from typing import Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

PLOTS_DIR = "plots"
WIN_RATES = {"gold": "trained.gold_win_rate_vs_sft_target",
             "proxy": "trained.proxy_win_rate_vs_sft_target",
             "AutoSxS": "trained.autosxs_win_rate_vs_sft_target"}
SFT_POLICY_GOLD = "sft.gold_win_rate_vs_sft_target"
ACCEPTANCE = "select.acceptance_rate"
TRAINING_STAGES = ("sft", "ranker", "preference")


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (imported here, on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str) -> str:
    """Writes `figure` as a PNG at `path` atomically, closes it and returns the path."""
    import io

    from rso_jax.runtime import atomic_io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(figure)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_io.write_bytes(path, buffer.getvalue())
    return path


def _number(text) -> Optional[float]:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def is_numeric_axis(summary: Sequence[dict], axis: str) -> bool:
    values = {row[axis] for row in summary}
    return len(values) > 1 and all(_number(value) is not None for value in values)


def _lines(summary: Sequence[dict], axis: str, others: Sequence[str]) -> dict[str, list[dict]]:
    """The summary rows grouped by the values of the other axes (one line each)."""
    lines: dict[str, list[dict]] = {}
    for row in summary:
        label = ", ".join(f"{other}={row[other]}" for other in others)
        lines.setdefault(label, []).append(row)
    return lines


def metric_against_axis(summary: Sequence[dict], axis: str, others: Sequence[str],
                        metrics: dict[str, str], path: str, ylabel: str,
                        baseline: Optional[str] = None) -> Optional[str]:
    """Each metric (label -> column) of the summary rows against `axis`, mean with the
    standard deviation over seeds as error bars: a line per combination of the `others` axes
    for a numeric axis (log scale when its values span a factor of 20), grouped bars for named
    settings. `baseline`: a column drawn as a dashed line (its mean over the rows)."""
    present = {label: column for label, column in metrics.items()
               if any(row.get(column) is not None for row in summary)}
    if not present or len({row[axis] for row in summary}) < 2:
        return None
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7.5, 4.2))
    numeric = is_numeric_axis(summary, axis)
    lines = _lines(summary, axis, others)
    if numeric:
        for line_label, rows in lines.items():
            rows = sorted(rows, key=lambda row: float(row[axis]))
            x = [float(row[axis]) for row in rows]
            for label, column in present.items():
                name = f"{label} ({line_label})" if line_label else label
                axes.errorbar(x, [row.get(column, math.nan) for row in rows],
                              yerr=[row.get(column + ".std", 0.0) for row in rows],
                              marker="o", capsize=3, label=name)
        values = sorted({float(row[axis]) for row in summary})
        if values[0] > 0 and values[-1] / values[0] >= 20:
            axes.set_xscale("log")
        axes.set_xlabel(axis)
    else:
        settings = list(dict.fromkeys(row[axis] for row in summary))
        bars = [(line, label, column) for line in lines for label, column in present.items()]
        width = 0.8 / len(bars)
        for index, (line_label, label, column) in enumerate(bars):
            by_setting = {row[axis]: row for row in lines[line_label]}
            heights = [by_setting.get(s, {}).get(column, math.nan) for s in settings]
            errors = [by_setting.get(s, {}).get(column + ".std", 0.0) for s in settings]
            axes.bar(np.arange(len(settings)) + (index - (len(bars) - 1) / 2) * width,
                     heights, width, yerr=errors, capsize=2,
                     label=f"{label} ({line_label})" if line_label else label)
        axes.set_xticks(np.arange(len(settings)))
        axes.set_xticklabels(settings, rotation=35, ha="right")
    if baseline is not None:
        reference = [row[baseline] for row in summary if row.get(baseline) is not None]
        if reference:
            axes.axhline(float(np.mean(reference)), color="gray", linestyle="--",
                         label="SFT policy (gold)")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return save_figure(figure, path)


def reward_distributions(points: dict[str, str], path: str) -> Optional[str]:
    """Histograms of the candidates' rewards and of the rewards of the responses each point
    kept (`select/kept.npz`), proxy (eq. 7) and gold. `points`: label -> work directory; the
    candidates are the first point's (points that share their samples)."""
    kept = {}
    for label, work_dir in points.items():
        kept_file = os.path.join(work_dir, "select", "kept.npz")
        rewards_file = os.path.join(work_dir, "score", "rewards.npz")
        if os.path.isfile(kept_file) and os.path.isfile(rewards_file):
            with np.load(kept_file) as k, np.load(rewards_file) as r:
                kept[label] = ({name: r[name] for name in r.files}, k["mask"])
    if not kept:
        return None
    candidates = next(iter(kept.values()))[0]
    kinds = [kind for kind in ("rewards", "gold_rewards")
             if all(kind in rewards for rewards, _ in kept.values())]
    plt = pyplot()
    figure, axes = plt.subplots(1, len(kinds), figsize=(6.0 * len(kinds), 4.0), squeeze=False)
    for axis, kind in zip(axes[0], kinds):
        everything = candidates[kind].reshape(-1)
        bins = np.histogram_bin_edges(everything, bins=30)
        axis.hist(everything, bins=bins, density=True, color="lightgray",
                  label=f"all candidates ({everything.size})")
        for label, (rewards, mask) in kept.items():
            values = rewards[kind][mask]
            axis.hist(values, bins=bins, density=True, histtype="step", linewidth=1.6,
                      label=f"{label} (mean {values.mean():.2f})")
        axis.axvline(everything.mean(), color="gray", linestyle=":")
        axis.set_xlabel("proxy reward (eq. 7)" if kind == "rewards" else "gold reward")
        axis.set_ylabel("density")
        axis.legend(fontsize=7)
    return save_figure(figure, path)


def best_of_n_curves(results: Sequence[tuple[str, dict]], path: str) -> Optional[str]:
    """Best-of-N at inference against N, from (setting label, results.json) pairs: a line per
    setting and policy, mean and standard deviation over the results of that label (its seeds),
    of the gold reward (the proxy reward where a result has no gold figures); and the analytic
    KL beside each line's measured one."""
    curves: dict[str, dict[int, list[dict]]] = {}
    for label, result in results:
        for policy, rows in (result.get("best_of_n") or {}).get("policies", {}).items():
            name = f"{policy} policy" + (f", {label}" if label else "")
            for row in rows:
                curves.setdefault(name, {}).setdefault(row["n"], []).append(row)
    if not curves:
        return None
    plt = pyplot()
    figure, (reward_axis, kl_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for name, by_n in curves.items():
        ns = sorted(by_n)
        every = [row for rows in by_n.values() for row in rows]
        key = ("gold_reward" if all(row.get("gold_reward") is not None for row in every)
               else "proxy_reward")
        for axis, column, label in ((reward_axis, key, f"{name} ({key})"),
                                    (kl_axis, "kl_measured", f"measured, {name}")):
            values = [[row[column] for row in by_n[n]] for n in ns]
            axis.errorbar(ns, [np.mean(v) for v in values], yerr=[np.std(v) for v in values],
                          marker="o", capsize=3, label=label)
    ns = sorted({n for by_n in curves.values() for n in by_n})
    kl_axis.plot(ns, [math.log(n) - (n - 1) / n for n in ns], "k--",
                 label="analytic: log N - (N-1)/N")
    for axis, label in ((reward_axis, "reward of the kept sample"), (kl_axis, "KL (nats)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("N")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return save_figure(figure, path)


def read_metrics(path: str) -> list[dict]:
    """A training stage's metrics.jsonl (lines that do not parse, e.g. a torn last line of a
    stopped run, are skipped)."""
    rows = []
    with open(path) as stream:
        for line in stream:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return [row for row in rows if isinstance(row, dict) and "step" in row]


def training_curves(work_dir: str, path: str) -> Optional[str]:
    """Each training stage's train/loss against the step, with its evaluations (eval/*): losses
    on the same axis, accuracies and win rates on a second one."""
    stages = [(stage, os.path.join(work_dir, stage, "metrics.jsonl")) for stage in
              TRAINING_STAGES]
    stages = [(stage, read_metrics(file)) for stage, file in stages if os.path.isfile(file)]
    if not stages:
        return None
    plt = pyplot()
    figure, axes = plt.subplots(1, len(stages), figsize=(5.6 * len(stages), 3.6), squeeze=False)
    figure.subplots_adjust(wspace=0.55)  # room for each panel's right-hand axis
    for axis, (stage, rows) in zip(axes[0], stages):
        names = sorted({k for row in rows for k in row if k.startswith("eval/")})
        losses = ["train/loss"] + [name for name in names if name.endswith("loss")]
        for name in losses:  # losses share the left axis
            points = [row for row in rows if name in row]
            axis.plot([r["step"] for r in points], [r[name] for r in points],
                      "-" if name == "train/loss" else "o-", lw=0.8, ms=3, label=name)
        axis.set_title(stage)
        axis.set_xlabel("step")
        axis.set_ylabel("loss")
        axis.legend(fontsize=7, loc="upper right")
        others = [name for name in names if name not in losses]
        if others:  # accuracies and win rates on the right
            twin = axis.twinx()
            for index, name in enumerate(others, start=len(losses)):
                points = [row for row in rows if name in row]
                twin.plot([r["step"] for r in points], [r[name] for r in points], "o-", ms=3,
                          color=f"C{index % 10}", label=name)
            twin.legend(fontsize=7, loc="center right")
    return save_figure(figure, path)


def sweep_plots(sweep_dir: str, summary: Sequence[dict], axes: Sequence[str],
                points: Sequence[tuple[dict, str, Optional[dict]]],
                seed_axis: str = "SEED") -> list[str]:
    """Every plot of a sweep into <sweep_dir>/plots/; returns the paths written. A plot that
    fails is logged and skipped: the sweep's tables stand without it.

    Args:
      summary: the sweep's summary rows (mean and '.std' over seeds per setting).
      axes: the sweep's axes, in order.
      points: (labels: axis -> value label, work directory, results.json or None) of each
        point, in the sweep's order.
    """
    directory = os.path.join(sweep_dir, PLOTS_DIR)
    settings = [axis for axis in axes if axis != seed_axis]

    def label(labels):
        return ", ".join(f"{axis}={labels[axis]}" if axis.isupper() else labels[axis]
                         for axis in settings)
    drawings = []  # (the file, a function that draws it and returns its path or None)
    for axis in settings:
        others = [other for other in settings if other != axis]
        path = os.path.join(directory, f"{axis}.png")
        drawings.append((path, functools.partial(
            metric_against_axis, summary, axis, others, WIN_RATES, path,
            "win rate vs SFT target", baseline=SFT_POLICY_GOLD)))
        if is_numeric_axis(summary, axis):
            path = os.path.join(directory, f"{axis}.acceptance.png")
            drawings.append((path, functools.partial(
                metric_against_axis, summary, axis, others, {"acceptance rate": ACCEPTANCE},
                path, "acceptance rate")))
    first_seed = points[0][0].get(seed_axis) if points else None  # the first in axis order
    one_seed = {label(labels): work_dir for labels, work_dir, _ in points
                if labels.get(seed_axis) == first_seed}
    path = os.path.join(directory, "rewards.png")
    drawings.append((path, functools.partial(reward_distributions,
                                             _distinct_selections(one_seed), path)))
    path = os.path.join(directory, "best_of_n.png")
    drawings.append((path, functools.partial(
        best_of_n_curves, [(label(labels), results) for labels, _, results in points
                           if results], path)))
    for _, work_dir, _ in points:
        path = os.path.join(directory, "training", os.path.basename(work_dir) + ".png")
        drawings.append((path, functools.partial(training_curves, work_dir, path)))
    written = []
    for path, draw in drawings:
        try:
            written.append(draw())
        except Exception as error:  # a plot is not worth the sweep's report
            logger.warning("Plot %s not drawn: %s: %s", path, type(error).__name__, error)
    return [path for path in written if path]


def _distinct_selections(points: dict[str, str]) -> dict[str, str]:
    """The points whose select stages differ (shared stages resolve to one directory)."""
    seen, found = set(), {}
    for label, work_dir in points.items():
        select = os.path.realpath(os.path.join(work_dir, "select"))
        if select not in seen:
            seen.add(select)
            found[label] = work_dir
    return found
