"""Preference: the policy trained from SFT (in later rounds, from the previous round's policy)
on the pairs with the configured loss (and SLiC's regularisation, LAMBDA), or (RAFT, ReST,
best-of-N) fine-tuned on the selected responses; keeps the checkpoint with the best proxy win
rate against the SFT targets on validation prompts (RSO)."""

from __future__ import annotations

import dataclasses
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


def _pair_loss(experiment) -> Callable:
    return functools.partial(train_steps.preference_loss, model_config=experiment.policy_config,
                             loss_name=experiment.loss, gamma=experiment.gamma,
                             label_smoothing=experiment.label_smoothing,
                             regularization_weight=experiment.regularization_weight)


def _response_loss(experiment) -> Callable:
    return functools.partial(train_steps.sft_loss, model_config=experiment.policy_config)


def _pair_arrays(context: StageContext) -> dict:
    experiment = context.experiment
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
    return arrays


def _response_arrays(context: StageContext) -> dict:
    targets = context.load_arrays("select", select.TARGETS_FILE)
    return {"inputs": targets["prompts"], "targets": targets["targets"]}


def _pair_shapes(experiment, rows: int) -> dict:
    prompt, response = experiment.lengths.prompt, experiment.lengths.response
    shapes = {"inputs": (rows, prompt), "chosen": (rows, response),
              "rejected": (rows, response), "reference_chosen_logps": (rows,),
              "reference_rejected_logps": (rows,)}
    if experiment.regularization_weight:
        shapes["sft_targets"] = (rows, response)
    return shapes


def _response_shapes(experiment, rows: int) -> dict:
    return {"inputs": (rows, experiment.lengths.prompt),
            "targets": (rows, experiment.lengths.response)}


def _pair_settings(e) -> dict:
    return {"loss": e.loss, "gamma": e.gamma, "label_smoothing": e.label_smoothing,
            **described.unless_default(regularization_weight=e.regularization_weight)}


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """What the preference stage trains the policy on: preference pairs with the pair loss, or
    the selected responses of RAFT, ReST and best-of-N with token cross-entropy.

    Attributes:
      what: in words ('pairs').
      reads: the stages whose outputs it is made of.
      arrays: `StageContext -> {name: array}`, the training arrays, loaded.
      array_shapes: `(experiment, rows) -> {name: shape}` of a batch of `rows` of them.
      make_batch: `**arrays -> batch` (`batching`).
      loss_function: `experiment -> (params, batch, dropout_rng) -> (loss, metrics)`.
      settings: `experiment -> dict`, the settings its loss adds to the stage's.
    """

    what: str
    reads: tuple[str, ...]
    arrays: Callable[[StageContext], dict]
    array_shapes: Callable[[Any, int], dict]
    make_batch: Callable[..., Any]
    loss_function: Callable[[Any], Callable]
    settings: Callable[[Any], dict]


PAIRS = TrainingData("pairs", ("select", "reference"), _pair_arrays, _pair_shapes,
                     batching.preference_batch_from_tokens, _pair_loss, _pair_settings)
SELECTED_RESPONSES = TrainingData("selected responses", ("select",), _response_arrays,
                                  _response_shapes, batching.sft_batch_from_tokens,
                                  _response_loss, lambda e: {})


def training_data(experiment) -> TrainingData:
    """What this experiment's selection gives the policy to learn from: the one place the
    preference stage, its reads and its planned step decide between pairs and responses."""
    return PAIRS if experiment.selection.makes_pairs else SELECTED_RESPONSES


def run(context: StageContext) -> dict:
    experiment = context.experiment
    data = training_data(experiment)
    _, summary = training_runs.run_training(
        context.stage_name("preference"), experiment.preference, experiment.work_dir,
        experiment.policy_config, context.stage_params(context.previous_policy),
        data.loss_function(experiment), data.arrays(context), data.make_batch,
        context.partitioner,
        evaluate=proxy_win_rate_on_validation(context), best_metric=BEST_METRIC,
        remat_policy=experiment.remat_policy)
    return {"started_from": context.previous_policy,
            "final_metrics": summary["last_metrics"], "best": summary["best"],
            **training_runs.resume_summary(summary)}


def settings(e) -> dict:
    return {"schedule": described.describe(e.preference), "task": described.describe(e.task),
            "num_eval_prompts": e.num_eval_prompts, "sampling": described.sampling(e),
            **training_data(e).settings(e)}


STAGE = Stage("preference", run, settings,
              reads=lambda e: training_data(e).reads + (POLICY, "ranker"),
              task_data=lambda e: ((e.task.sft_examples, "validation"),))
