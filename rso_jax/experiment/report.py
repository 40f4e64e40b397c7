"""results.md: the evaluation's table, naming the method and its settings."""

from __future__ import annotations

import dataclasses
from typing import Optional

from rso_jax.experiment import scorers
from rso_jax.experiment.config import SFT_SELECTIONS, Experiment

METHOD_NAMES = {"rso": "rso-sample-rank", "sft": "sft-sample-rank",
                "top_k_over_n": "best-of-N (top-k-over-N)", "direct": "direct",
                "raft": "RAFT (SFT on each prompt's best candidate by a ranker tournament)",
                "rest": "ReST (SFT on candidates above the normalised eq. 7 reward threshold)",
                "best_of_n": "best-of-N SFT (each prompt's candidate of highest reward)"}
PAIR_RULE_NAMES = {"first_round": "first-round pairs by the ranker",
                   "tournament": "tournament pairs by the ranker",
                   "tournament_by_reward": "tournament pairs by eq. 7 rewards",
                   "rs_dpo": "RS-DPO pairs", "best_vs_worst": "best-vs-worst pairs",
                   "best_vs_random": "best-vs-random pairs"}


def selection_settings(experiment: Experiment) -> dict:
    return dataclasses.asdict(experiment.selection)


def method_title(results: dict) -> str:
    selection = results["selection"]
    method = METHOD_NAMES[selection["method"]]
    parts = [method]
    if results.get("round", 1) > 1:
        parts.insert(0, f"round {results['round']}")
    if results.get("sample_task", results["task"]) != results["task"] and (
            selection["method"] != "direct"):
        parts.append(f"sampled on {results['sample_task']} prompts")
    if results.get("reference_policy", "sft") != "sft" and selection["method"] not in (
            SFT_SELECTIONS):
        parts.append("reference: the previous round's policy")
    if selection["method"] != "direct" and results.get("scorer"):
        parts.append(f"scored by the {scorers.KINDS[results['scorer']].description}")
    if selection["method"] in SFT_SELECTIONS:
        if selection["method"] == "rest":
            parts.append(f"threshold {selection['rest_threshold']}")
        return ", ".join(parts)
    if selection["method"] != "direct":
        rule = PAIR_RULE_NAMES[selection["pair_rule"]]
        if selection["pair_rule"] == "rs_dpo":
            rule += f" (eta {selection['eta']}, tau {selection['tau']})"
        parts.append(rule)
        if selection["method"] == "rso":
            parts.append(f"beta {selection['beta']}")
        parts.append(f"{selection['num_samples']} kept")
    loss = f"{results['loss']} (gamma {results['gamma']}"
    if results.get("label_smoothing"):
        loss += f", label smoothing {results['label_smoothing']}"
    if results.get("regularization_weight"):
        loss += f", SFT-target regularisation lambda {results['regularization_weight']}"
    return f"{', '.join(parts)}; {loss})"


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def results_table(results: dict) -> str:
    task = results["task"] + ("" if results["eval_task"] == results["task"]
                              else f", evaluated on {results['eval_task']}")
    lines = [f"# RSO experiment ({task}): {method_title(results)}", "",
             f"{results['eval_prompts']} held-out prompts, greedy decoding; gold judge: "
             f"{results['gold_source'] or 'none (proxy figures only)'}.", "",
             "| policy | gold reward | proxy win rate vs SFT target | gold win rate vs SFT target "
             "| AutoSxS win rate vs SFT target | gold win rate vs SFT policy "
             "| proxy win rate vs SFT policy |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in results["policies"].items():
        reward = row["gold_reward"]
        lines.append(f"| {name} | {'-' if reward is None else f'{reward:.3f}'} | "
                     f"{_percent(row['proxy_win_rate_vs_sft_target'])} | "
                     f"{_percent(row['gold_win_rate_vs_sft_target'])} | "
                     f"{_percent(row.get('autosxs_win_rate_vs_sft_target'))} | "
                     f"{_percent(row.get('gold_win_rate_vs_sft_policy'))} | "
                     f"{_percent(row.get('proxy_win_rate_vs_sft_policy'))} |")
    if results["gold_reward_sft_target"] is not None:
        optimum = results["gold_reward_optimum"]
        lines += ["", f"Gold reward of the SFT targets: {results['gold_reward_sft_target']:.3f}"
                  + ("" if optimum is None else f"; optimum: {optimum:.3f}") + "."]
    if results.get("autosxs_judge") == "gold_program":
        lines += ["", "AutoSxS judge: the gold program (each judgement drawn from "
                  "sigma((gold(A) - gold(B)) / AUTOSXS_GOLD_TEMPERATURE))."]
    if "best_of_n" in results:
        lines += best_of_n_table(results["best_of_n"])
    return "\n".join(lines) + "\n"


def best_of_n_table(best_of_n: dict) -> list[str]:
    """results.md lines: one table per policy."""
    lines = ["", f"## Best-of-N at inference ({best_of_n['samples_per_prompt']} samples per "
             "prompt; each N averaged over the disjoint groups of N)", "",
             "| policy | N | gold reward | gold win rate vs SFT target | proxy win rate vs SFT "
             "target | proxy reward | KL analytic | KL measured |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def number(value):
        return "-" if value is None else f"{value:.3f}"
    for name, rows in best_of_n["policies"].items():
        for row in rows:
            lines.append(f"| {name} | {row['n']} | {number(row['gold_reward'])} | "
                         f"{_percent(row['gold_win_rate_vs_sft_target'])} | "
                         f"{_percent(row['proxy_win_rate_vs_sft_target'])} | "
                         f"{number(row['proxy_reward'])} | {number(row['kl_analytic'])} | "
                         f"{number(row['kl_measured'])} |")
    return lines
