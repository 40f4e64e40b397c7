"""results.md: the evaluation's table, naming the method and its settings."""

from __future__ import annotations

import dataclasses
from typing import Optional

from rso_jax.experiment.config import Experiment

METHOD_NAMES = {"rso": "rso-sample-rank", "sft": "sft-sample-rank", "direct": "direct"}


def selection_settings(experiment: Experiment) -> dict:
    return dataclasses.asdict(experiment.selection)


def method_title(results: dict) -> str:
    selection = results["selection"]
    method = METHOD_NAMES[selection["method"]]
    parts = [method]
    if selection["method"] != "direct":
        parts.append(f"{selection['pair_rule']} pairs")
        if selection["method"] == "rso":
            parts.append(f"beta {selection['beta']}")
        parts.append(f"{selection['num_samples']} kept")
    return (f"{', '.join(parts)}; {results['loss']} (gamma {results['gamma']})")


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def results_table(results: dict) -> str:
    task = results["task"] + ("" if results["eval_task"] == results["task"]
                              else f", evaluated on {results['eval_task']}")
    lines = [f"# RSO experiment ({task}): {method_title(results)}", "",
             f"{results['eval_prompts']} held-out prompts, greedy decoding; gold judge: "
             f"{results['gold_source'] or 'none (proxy figures only)'}.", "",
             "| policy | gold reward | gold win rate vs SFT target | proxy win rate vs SFT target "
             "| gold win rate vs SFT policy | proxy win rate vs SFT policy |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, row in results["policies"].items():
        reward = row["gold_reward"]
        lines.append(f"| {name} | {'-' if reward is None else f'{reward:.3f}'} | "
                     f"{_percent(row['gold_win_rate_vs_sft_target'])} | "
                     f"{_percent(row['proxy_win_rate_vs_sft_target'])} | "
                     f"{_percent(row.get('gold_win_rate_vs_sft_policy'))} | "
                     f"{_percent(row.get('proxy_win_rate_vs_sft_policy'))} |")
    if results["gold_reward_sft_target"] is not None:
        optimum = results["gold_reward_optimum"]
        lines += ["", f"Gold reward of the SFT targets: {results['gold_reward_sft_target']:.3f}"
                  + ("" if optimum is None else f"; optimum: {optimum:.3f}") + "."]
    return "\n".join(lines) + "\n"
