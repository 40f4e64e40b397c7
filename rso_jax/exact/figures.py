"""The exact study's figures (PNG): each source's KL to pi_r and expected reward, mean and 95 %
interval over seeds, against the pair budget (budget.png), against beta with rejection
sampling's acceptance rate (beta.png), and against N, the misspecification and the ranker's
correlation (axes.png)."""

from __future__ import annotations

import os

import numpy as np

from rso_jax.tools import seed_statistics
from rso_jax.tools.plots import pyplot, save_figure

SOURCE_STYLES = {"direct": ("direct", "tab:gray"), "sft_sample_rank": ("sft-sample-rank",
                                                                         "tab:blue"),
                 "rso_sample_rank": ("rso-sample-rank", "tab:red"),
                 "top_k_over_n": ("top-k-over-N", "tab:orange"),
                 "optimal_policy": ("pairs from pi_r", "tab:green")}
MEASURE_LABELS = {"kl_to_optimal": "KL(pi_r || pi_theta)", "expected_reward": "E[r] under pi_theta",
                  "acceptance_rate": "acceptance rate"}


def _curve(axes, points, panel: str, value, source: str, measure: str, by_budget: bool) -> None:
    keys = sorted((k for k in points if k[0] == panel and k[2] == source
                   and (value is None or k[1] == value)),
                  key=lambda k: k[3] if by_budget else float(k[1]))
    if not keys:
        return
    xs = [k[3] if by_budget else float(k[1]) for k in keys]
    intervals = [seed_statistics.interval(points[k][measure]) for k in keys]
    label, color = SOURCE_STYLES[source]
    axes.plot(xs, [i.mean for i in intervals], marker="o", markersize=3, color=color,
              label=label)
    axes.fill_between(xs, [i.low for i in intervals], [i.high for i in intervals], color=color,
                      alpha=0.2, linewidth=0)


def _reference(axes, points, share, measure: str) -> None:
    key = ("reference", share, "optimal_policy_exact", 0)
    if key in points and measure == "expected_reward":
        axes.axhline(float(np.mean(points[key][measure])), color="black", linestyle="--",
                     linewidth=1, label="pi_r")


def _kl_and_reward_grid(points, columns, path: str) -> str:
    """KL (top) and expected reward (bottom) per source, one column per (panel, value or None
    for the whole panel, x label, x log base or None, title)."""
    figure, grid = pyplot().subplots(2, len(columns), figsize=(5.4 * len(columns), 7.5),
                                     squeeze=False)
    for column, (panel, value, label, log_base, title) in enumerate(columns):
        for row, measure in enumerate(("kl_to_optimal", "expected_reward")):
            axes = grid[row][column]
            for source in SOURCE_STYLES:
                _curve(axes, points, panel, value, source, measure, panel == "budget")
            if value is not None:
                _reference(axes, points, value, measure)
            if log_base:
                axes.set_xscale("log", base=log_base)
            if measure == "kl_to_optimal":
                axes.set_yscale("log")
            axes.set_xlabel(label)
            axes.set_ylabel(MEASURE_LABELS[measure])
            if title:
                axes.set_title(title)
    grid[0][-1].legend(fontsize=8)  # the last column shows every source
    figure.tight_layout()
    return save_figure(figure, path)


def draw_all(points, directory: str) -> list[str]:
    """Draws the figures the study's points allow into `directory`; returns their paths."""
    paths = []
    shares = [k[1] for k in points if k[0] == "budget" and k[2] == "sft_sample_rank"
              and k[3] == min(b[3] for b in points if b[0] == "budget")]
    if shares:
        paths.append(_kl_and_reward_grid(
            points, [("budget", share, "preference pairs", 2, f"misspecification {share}")
                     for share in shares], os.path.join(directory, "budget.png")))
    if any(k[0] == "beta" for k in points):
        figure, grid = pyplot().subplots(1, 3, figsize=(16, 4.2))
        for axes, measure in zip(grid, ("kl_to_optimal", "expected_reward", "acceptance_rate")):
            sources = ("rso_sample_rank",) if measure == "acceptance_rate" else SOURCE_STYLES
            for source in sources:
                _curve(axes, points, "beta", None, source, measure, False)
            axes.set_xscale("log")
            if measure == "kl_to_optimal":
                axes.set_yscale("log")
            axes.set_xlabel("beta (gamma = beta)")
            axes.set_ylabel(MEASURE_LABELS[measure])
        grid[0].legend(fontsize=8)
        figure.tight_layout()
        paths.append(save_figure(figure, os.path.join(directory, "beta.png")))
    panels = [p for p in ("num_candidates", "misspecification", "ranker_correlation")
              if any(k[0] == p for k in points)]
    if panels:
        paths.append(_kl_and_reward_grid(
            points, [(panel, None, panel, 2 if panel == "num_candidates" else None, None)
                     for panel in panels], os.path.join(directory, "axes.png")))
    return paths
