"""Evaluate: greedy decodes of held-out prompts by the SFT and the trained policy, judged
against the SFT targets and each other.

Proxy win rates come from the trained ranker. Gold figures come from the task's gold reward
program where it has one, otherwise from a separate gold ranker checkpoint (RSO's "stronger
ranker"); with neither, only proxy figures are reported. AutoSxS win rates (`rso_jax.rewards.autosxs`:
8 judgements, 4 flipped) come from AUTOSXS_JUDGE_CHECKPOINT when one is given, or from the
gold program as a judge (AUTOSXS_GOLD_TEMPERATURE). With EVAL_BEST_OF_N, best-of-N at
inference of both policies (`experiment.best_of_n`). The prompts may
come from another task than the training one (EVAL_TASK; RSO Table 6: a TL;DR policy on
CNN/DailyMail). Round r > 1 evaluates its own policy (`round_<r>/results.json`).

The stage writes `results.json` and `results.md` in its directory; the runner copies them to
the top of the round's directory once the stage is done (`artifacts.publish`).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from rso_jax.rewards import autosxs
from rso_jax.runtime import atomic_io, run_info
from rso_jax.experiment import artifacts, best_of_n, checkpoint_inputs, metrics, report
from rso_jax.experiment.context import StageContext
from rso_jax.experiment import described_settings as described
from rso_jax.experiment.stage import Stage

NUM_EXAMPLES_SHOWN = 5


class GoldJudge:
    """Gold win rates (and mean gold reward, for a program) of responses on contexts."""

    def __init__(self, context: StageContext, task: Any):
        experiment = context.experiment
        self.context, self.task = context, task
        self.ranker_params: Optional[Any] = None
        if not task.has_gold_reward and experiment.gold_ranker_checkpoint is not None:
            self.ranker_params = checkpoint_inputs.restore(
                experiment.gold_ranker_checkpoint, "GOLD_RANKER_CHECKPOINT",
                experiment.gold_ranker_config, context.partitioner)

    @property
    def source(self) -> Optional[str]:
        if self.task.has_gold_reward:
            return "program"
        return "gold_ranker" if self.ranker_params is not None else None

    def rewards(self, contexts, responses):
        return self.task.gold_rewards(contexts, responses) if self.source == "program" else None

    def win_outcomes(self, contexts, first, second) -> Optional[np.ndarray]:
        """Per example: 1 where `first` wins under the gold judge, 0.5 a tie, 0 a loss."""
        if self.source == "program":
            return metrics.win_outcomes(self.task.gold_rewards(contexts, first),
                                        self.task.gold_rewards(contexts, second))
        if self.source == "gold_ranker":
            probability = self.context.preference_probabilities(
                self.ranker_params, contexts, first, second,
                config=self.context.experiment.gold_ranker_config, task=self.task)
            return metrics.proxy_win_outcomes(probability)
        return None

    def win_rate(self, contexts, first, second) -> Optional[float]:
        outcomes = self.win_outcomes(contexts, first, second)
        return None if outcomes is None else float(np.mean(outcomes))


def autosxs_win_rate(context: StageContext, judge_params: Any, task: Any, contexts, policy,
                     baseline, seed: int) -> Optional[float]:
    """AutoSxS win rate of the `policy` responses over the `baseline` ones: judged by the
    AUTOSXS_JUDGE_CHECKPOINT ranker (`judge_params`), or by the gold program
    (AUTOSXS_GOLD_TEMPERATURE); None with neither."""
    experiment = context.experiment
    if judge_params is not None:
        policy_first, baseline_first = context.judge_probabilities(
            judge_params, experiment.autosxs_judge_config, contexts, policy, baseline, task)
    elif experiment.autosxs_gold_temperature is not None:
        policy_first, baseline_first = autosxs.gold_program_probabilities(
            task.gold_rewards(contexts, policy), task.gold_rewards(contexts, baseline),
            experiment.autosxs_gold_temperature)
    else:
        return None
    return autosxs.decide(autosxs.judgement_scores(policy_first, baseline_first, seed)).win_rate


def held_out(context: StageContext) -> tuple[Any, list, list, np.ndarray]:
    """The evaluation task, and its held-out contexts, SFT targets and encoded prompts."""
    experiment = context.experiment
    task = experiment.evaluation_task
    data = task.sft_examples("test")[: experiment.num_eval_prompts]
    contexts, targets = [d.context for d in data], [d.target for d in data]
    return task, contexts, targets, context.encode_prompts([d.prompt for d in data])


def _policy_rows(context: StageContext, decodes: dict[str, list[str]], contexts: list[str],
                 targets: list[str], task: Any, gold: "GoldJudge", judge: Optional[Any],
                 proxy) -> dict[str, dict]:
    """Each policy's gold reward and win rates against the SFT targets (gold, proxy, AutoSxS),
    and the trained policy's against the SFT policy."""
    rows = {}
    for name, texts in decodes.items():
        rewards = gold.rewards(contexts, texts)
        rows[name] = {"gold_reward": None if rewards is None else float(rewards.mean()),
                      "gold_win_rate_vs_sft_target": gold.win_rate(contexts, texts, targets),
                      "proxy_win_rate_vs_sft_target": proxy(texts, targets),
                      "autosxs_win_rate_vs_sft_target": autosxs_win_rate(
                          context, judge, task, contexts, texts, targets,
                          context.experiment.seed)}
    rows["trained"]["gold_win_rate_vs_sft_policy"] = gold.win_rate(contexts, decodes["trained"],
                                                                   decodes["sft"])
    rows["trained"]["proxy_win_rate_vs_sft_policy"] = proxy(decodes["trained"], decodes["sft"])
    return rows


def run(context: StageContext) -> dict:
    experiment = context.experiment
    task, contexts, targets, prompts = held_out(context)
    scorer = context.scorer()
    policies = {"sft": context.params("sft"), "trained": context.params("preference")}
    decodes = {name: context.decode_checked(context.greedy(params, prompts),
                                            f"the {name} policy's greedy decodes")
               for name, params in policies.items()}
    gold = GoldJudge(context, task)
    judge = None
    if experiment.autosxs_judge_checkpoint is not None:
        judge = checkpoint_inputs.restore(experiment.autosxs_judge_checkpoint,
                                          "AUTOSXS_JUDGE_CHECKPOINT",
                                          experiment.autosxs_judge_config, context.partitioner)

    def proxy_outcomes(contexts, first, second):  # the trained ranker, in its template
        return metrics.proxy_win_outcomes(scorer.preference_probabilities(contexts, first,
                                                                          second))

    def proxy(first, second):
        return float(np.mean(proxy_outcomes(contexts, first, second)))

    rows = _policy_rows(context, decodes, contexts, targets, task, gold, judge, proxy)
    target_rewards = gold.rewards(contexts, targets)
    results = {
        "task": experiment.task.name, "eval_task": task.name, "scorer": experiment.scorer,
        "sample_task": experiment.sampling_task.name,
        "reference_policy": context.reference_policy,
        "round": context.round,
        "regularization_weight": experiment.regularization_weight,
        "selection": report.selection_settings(experiment), "loss": experiment.loss,
        "gamma": experiment.gamma, "label_smoothing": experiment.label_smoothing,
        "eval_prompts": len(contexts), "gold_source": gold.source,
        "gold_reward_sft_target": None if target_rewards is None else float(target_rewards.mean()),
        "gold_reward_optimum": task.gold_reward_optimum(contexts) if gold.source == "program"
        else None,
        "policies": rows,
        "autosxs_judge": ("checkpoint" if judge is not None else "gold_program"
                          if experiment.autosxs_gold_temperature is not None else None),
        "examples": [{"context": c, "sft_target": t, "sft": s, "trained": r}
                     for c, t, s, r in list(zip(contexts, targets, decodes["sft"],
                                                decodes["trained"]))[:NUM_EXAMPLES_SHOWN]]}
    if experiment.eval_best_of_n is not None:
        results["best_of_n"] = best_of_n.evaluate(
            context, policies, prompts, contexts, targets, decodes["sft"], scorer,
            gold_rewards=gold.rewards, gold_outcomes=gold.win_outcomes,
            proxy_outcomes=proxy_outcomes)
    directory = context.directory("evaluate")
    run_info.write_result(directory, artifacts.RESULTS_FILE, results)
    atomic_io.write_text(os.path.join(directory, artifacts.RESULTS_TABLE_FILE),
                         report.results_table(results))
    return {"trained_proxy_win_rate_vs_sft_policy":
            rows["trained"]["proxy_win_rate_vs_sft_policy"],
            "trained_gold_win_rate_vs_sft_policy": rows["trained"]["gold_win_rate_vs_sft_policy"]}


def settings(e) -> dict:
    # Its results.json lives in WORK_DIR: with shared stages each WORK_DIR evaluates.
    own = {"work_dir": described.absolute_path(e.work_dir)} if e.shared_stages_dir else {}
    return {**own, "eval_task": described.describe(e.evaluation_task),
            "num_eval_prompts": e.num_eval_prompts, "sampling": described.sampling(e),
            "gold_ranker_checkpoint": described.absolute_path(e.gold_ranker_checkpoint),
            "gold_ranker": described.describe(e.gold_ranker_config),
            "autosxs_judge_checkpoint": described.absolute_path(e.autosxs_judge_checkpoint),
            "autosxs_judge": described.describe(e.autosxs_judge_config),
            **described.unless_default(autosxs_gold_temperature=e.autosxs_gold_temperature),
            **({} if e.eval_best_of_n is None else {  # its samples' draws depend on these
                "eval_best_of_n": e.eval_best_of_n, "seed": e.seed,
                "sample_batch_size": e.inference_batch_sizes.sample})}


STAGE = Stage("evaluate", run, settings, reads=lambda e: ("preference", "sft", "ranker"),
              task_data=lambda e: ((e.evaluation_task.sft_examples, "test"),))
