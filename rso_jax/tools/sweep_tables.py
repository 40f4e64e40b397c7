"""The tables of a sweep: each point's metrics as one flat row (`flat_metrics`), and the mean
and standard deviation over seeds of every other setting (`summary_rows`), as CSV or Markdown.
`rso_jax.tools.sweep` writes them; `scripts/results_table.py` prints their compact form."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from typing import Any, Optional, Sequence

SEED_AXIS = "SEED"
BEST_OF_N_COLUMNS = ("gold_reward", "gold_win_rate_vs_sft_target", "proxy_win_rate_vs_sft_target",
                     "kl_measured")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def flat_metrics(results: dict, selection: Optional[dict] = None) -> dict[str, float]:
    """The numbers of a point's results.json: each policy's metrics ('trained.gold_reward'),
    best-of-N at inference ('best_of_n.sft.N=4.gold_reward'), and those of the select stage's
    summary (`selection`, its DONE.json: 'select.acceptance_rate', 'select.pairs')."""
    found = {}
    for policy, metrics in sorted(results.get("policies", {}).items()):
        for key, value in sorted(metrics.items()):
            if _is_number(value):
                found[f"{policy}.{key}"] = float(value)
    for key, value in sorted((selection or {}).items()):
        if _is_number(value) and key != "seconds":
            found[f"select.{key}"] = float(value)
    for policy, rows in sorted(results.get("best_of_n", {}).get("policies", {}).items()):
        for row in rows:  # the columns that vary (kl_analytic is a function of N)
            for key in BEST_OF_N_COLUMNS:
                if _is_number(row.get(key)):
                    found[f"best_of_n.{policy}.N={row['n']}.{key}"] = float(row[key])
    return found


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path) as stream:
            found = json.load(stream)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def last_round_results(work_dir: str) -> str:
    """results.json of the point's last round (round_<r>/ with ROUNDS > 1)."""
    rounds = [int(name[len("round_"):]) for name in (os.listdir(work_dir)
              if os.path.isdir(work_dir) else []) if re.fullmatch(r"round_\d+", name)]
    directory = os.path.join(work_dir, f"round_{max(rounds)}") if rounds else work_dir
    return os.path.join(directory, "results.json")


def point_results(points: Sequence[Any], points_dir: str) -> list[tuple]:
    """(point, work directory <points_dir>/<point.name>, its last round's results.json or None,
    that round's select summary or None) of each point (`sweep_points.Point`)."""
    found = []
    for point in points:
        work_dir = os.path.join(points_dir, point.name)
        path = last_round_results(work_dir)
        found.append((point, work_dir, _read_json(path),
                      _read_json(os.path.join(os.path.dirname(path), "select", "DONE.json"))))
    return found


def table_rows(results: Sequence[tuple]) -> list[dict]:
    """One row per point of `point_results`: its axes' values and its metrics."""
    rows = []
    for point, _, point_result, selection in results:
        row = {axis: label for axis, label in point.labels}
        if point_result is not None:
            row.update(flat_metrics(point_result, selection))
        else:
            row["missing"] = "no results.json"
        rows.append(row)
    return rows


def summary_rows(rows: Sequence[dict], axes: Sequence[str]) -> list[dict]:
    """Mean and standard deviation (over the SEED axis) of every metric, per other setting."""
    others = [axis for axis in axes if axis != SEED_AXIS]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[axis] for axis in others), []).append(row)
    summary = []
    for key, members in groups.items():
        row = dict(zip(others, key))
        row["seeds"] = sum("missing" not in member for member in members)
        metrics = sorted({name for m in members for name in m
                          if name not in axes and name != "missing"})
        for name in metrics:
            values = [m[name] for m in members if name in m]
            mean = sum(values) / len(values)
            spread = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
                      if len(values) > 1 else 0.0)
            row[name] = mean
            row[f"{name}.std"] = spread
        summary.append(row)
    return summary


def _columns(rows: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(name for row in rows for name in row))


def to_csv(rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(rows))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_markdown(rows: Sequence[dict]) -> str:
    columns = _columns(rows)

    def cell(value):
        return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"
