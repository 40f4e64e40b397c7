"""Preference: the policy trained from SFT (in later rounds, from the previous round's policy)
on the pairs with the configured loss (and SLiC's regularisation, LAMBDA), or (RAFT, ReST,
best-of-N) fine-tuned on the selected responses; keeps the checkpoint with the best proxy win
rate against the SFT targets on validation prompts (RSO)."""

from __future__ import annotations

import functools
from typing import Any, Callable

from rso_jax.data import batching
from rso_jax.training import train_steps
from rso_jax.experiment import metrics, training_runs
from rso_jax.experiment.context import StageContext
from rso_jax.experiment.stages import reference, select
from rso_jax.experiment import described_settings as described
from rso_jax.experiment.stage import POLICY, Stage

BEST_METRIC = "proxy_win_rate_vs_sft_target"


def proxy_win_rate_on_validation(context: StageContext) -> Callable[[Any], dict]:
    """`params -> {BEST_METRIC: ...}`: greedy decodes of the validation prompts judged by the
    ranker against their SFT targets."""
    experiment = context.experiment
    data = experiment.task.sft_examples("validation")[: experiment.num_eval_prompts]
    contexts, targets = [d.context for d in data], [d.target for d in data]
    prompts = context.encode_prompts([d.prompt for d in data])
    scorer = context.scorer()

    def evaluate(params):
        decodes = context.greedy_texts(params, prompts)
        proxy = scorer.preference_probabilities(contexts, decodes, targets)
        return {BEST_METRIC: metrics.proxy_win_rate(proxy)}
    return evaluate


def loss_function(experiment) -> Callable:
    """`(params, batch, dropout_rng) -> (loss, metrics)` of the preference stage: the pair loss
    (with SLiC's regularisation), or token cross-entropy on selected responses."""
    config = experiment.policy_config
    if not experiment.selection.makes_pairs:
        return functools.partial(train_steps.sft_loss, model_config=config)
    return functools.partial(train_steps.preference_loss, model_config=config,
                             loss_name=experiment.loss, gamma=experiment.gamma,
                             label_smoothing=experiment.label_smoothing,
                             regularization_weight=experiment.regularization_weight)


def run(context: StageContext) -> dict:
    experiment = context.experiment
    config = experiment.policy_config
    if experiment.selection.makes_pairs:
        pairs = context.load_arrays("select", select.PAIRS_FILE)
        logps = context.load_arrays("reference", reference.LOGPS_FILE)
        arrays = {"inputs": pairs["prompts"], "chosen": pairs["chosen"],
                  "rejected": pairs["rejected"], "reference_chosen_logps": logps["chosen"],
                  "reference_rejected_logps": logps["rejected"]}
        if experiment.regularization_weight:
            if "sft_targets" not in pairs:
                raise ValueError(f"LAMBDA={experiment.regularization_weight} needs the SFT "
                                 f"targets of the pairs, which {context.directory('select')} "
                                 "(made by an earlier version) lacks; delete that directory to "
                                 "select again.")
            arrays["sft_targets"] = pairs["sft_targets"]
        loss_fn = loss_function(experiment)
        make_batch = batching.preference_batch_from_tokens
    else:  # RAFT, ReST, best-of-N: SFT on the selected responses
        targets = context.load_arrays("select", select.TARGETS_FILE)
        arrays = {"inputs": targets["prompts"], "targets": targets["targets"]}
        loss_fn = loss_function(experiment)
        make_batch = batching.sft_batch_from_tokens
    _, summary = training_runs.run_training(
        context.stage_name("preference"), experiment.preference, experiment.work_dir, config,
        context.stage_params(context.previous_policy), loss_fn, arrays, make_batch,
        context.partitioner,
        evaluate=proxy_win_rate_on_validation(context), best_metric=BEST_METRIC)
    return {"started_from": context.previous_policy,
            "final_metrics": summary["last_metrics"], "best": summary["best"],
            **training_runs.resume_summary(summary)}


def settings(e) -> dict:
    common = {"schedule": described.describe(e.preference), "task": described.describe(e.task),
              "num_eval_prompts": e.num_eval_prompts, "sampling": described.sampling(e)}
    if not e.selection.makes_pairs:  # SFT on the selected responses: no loss settings
        return common
    return {**common, "loss": e.loss, "gamma": e.gamma, "label_smoothing": e.label_smoothing,
            **described.unless_default(regularization_weight=e.regularization_weight)}


STAGE = Stage("preference", run, settings,
              reads=lambda e: (("select", "reference", POLICY, "ranker")
                               if e.selection.makes_pairs else ("select", POLICY, "ranker")),
              task_data=lambda e: ((e.task.sft_examples, "validation"),))
