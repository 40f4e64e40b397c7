"""The jitted function of each stage that holds a model (the preference train step, the
sampler, the ranker's scorer, the reference scorer) at an experiment's shapes, ready to lower on
a mesh with abstract arguments: nothing is allocated. `plan` compiles them and reads XLA's
memory and cost analyses.

JAX reads XLA_FLAGS (the plan's simulated device count) when its backend starts, not when it is
imported: importing this module touches no device.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import numpy as np

from rso_jax.training import train_steps
from rso_jax.experiment import inference, scorers
from rso_jax.experiment.stages import preference


@dataclasses.dataclass(frozen=True)
class StageFunction:
    """A stage's jitted function and how to lower it on a mesh at the experiment's shapes."""

    name: str
    shapes: str  # the shapes it is compiled at, in words
    rows: int  # batch rows, which the mesh's data axis must divide
    model: Any  # the model (`model_spec.ModelSpec`) whose parameters it takes
    lower: Callable[[Any], Any]  # partitioner -> jax.stages.Lowered


def _abstract(shape: Sequence[int], dtype: Any, sharding: Any) -> Any:
    return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)


def abstract_params(model: Any, partitioner: Any) -> Any:
    """The model's parameters as shape-dtype-shardings on the mesh (nothing allocated)."""
    return jax.tree_util.tree_map(lambda shape, sharding: _abstract(shape.shape, shape.dtype,
                                                                       sharding),
                                  model.param_shapes(), partitioner.param_shardings(model))


def abstract_batch(partitioner: Any, **shapes: tuple) -> dict:
    """int32 token arrays (float32 log-probs and weights) of the given shapes, rows over 'data'."""
    return {name: _abstract(shape, np.float32 if name.endswith(("_logps", "weights"))
                            else np.int32,
                            partitioner.batch_sharding(len(shape)))
            for name, shape in shapes.items()}


def preference_train_step(experiment: Any) -> StageFunction:
    """The preference stage's train step: a pair loss, or cross-entropy on selected responses
    (RAFT, ReST, best-of-N)."""
    config, lengths = experiment.policy_config, experiment.lengths
    schedule = experiment.preference
    rows, prompt, response = schedule.batch_size, lengths.prompt, lengths.response
    data = preference.training_data(experiment)

    def lower(partitioner):
        optimizer = schedule.make_optimizer()
        arrays = abstract_batch(partitioner, **data.array_shapes(experiment, rows))
        batch = jax.tree_util.tree_map(
            lambda array: _abstract(array.shape, array.dtype,
                                    partitioner.batch_sharding(array.ndim)),
            jax.eval_shape(lambda arrays: data.make_batch(**arrays), arrays))
        step = train_steps.make_train_step(partitioner, config, optimizer,
                                           data.loss_function(experiment), batch,
                                           grad_accum_steps=schedule.grad_accum_steps,
                                           remat_policy=experiment.remat_policy)
        shardings = train_steps.state_shardings(partitioner, config, optimizer)
        shapes = jax.eval_shape(lambda params: train_steps.create_train_state(
            params, optimizer, jax.random.PRNGKey(0)), config.param_shapes())
        state = jax.tree_util.tree_map(lambda s, sh: _abstract(s.shape, s.dtype, sh), shapes,
                                       shardings)
        return step.lower(state, batch)
    return StageFunction("preference train step",
                         f"{rows} {data.what}, {prompt}-token prompts, {response}-token responses",
                         rows, config, lower)


def sampler(experiment: Any) -> StageFunction:
    config, sampling = experiment.policy_config, experiment.sampling
    prompts, length = experiment.inference_batch_sizes.sample, experiment.lengths.prompt

    def lower(partitioner):
        key = jax.ShapeDtypeStruct((2,), jax.numpy.uint32, sharding=partitioner.replicated)
        tokens = abstract_batch(partitioner, prompts=(prompts, length))["prompts"]
        return inference.sampler(config, sampling, partitioner).lower(
            abstract_params(config, partitioner), tokens, key)
    return StageFunction("sampler", f"{prompts} prompts of {length} tokens x "
                         f"{sampling.num_candidates} candidates x {sampling.max_decode_length} "
                         "new tokens", prompts, config, lower)


def ranker_scorer(experiment: Any) -> StageFunction:
    reward_model = scorers.kind(experiment)
    model = reward_model.model_spec(experiment)
    rows, length = experiment.inference_batch_sizes.ranker, experiment.lengths.ranker_input

    def lower(partitioner):
        inputs = abstract_batch(partitioner, inputs=(rows, length))["inputs"]
        params = abstract_params(model, partitioner)
        return reward_model.lower_scorer(experiment, partitioner, params, inputs)
    return StageFunction("ranker scorer",
                         f"{rows} inputs of {length} tokens{reward_model.orders_note}", rows,
                         model, lower)


def reference_scorer(experiment: Any) -> StageFunction:
    config, lengths = experiment.policy_config, experiment.lengths
    rows = experiment.inference_batch_sizes.reference
    chunks = experiment.inference_batch_sizes.reference_chunks

    def lower(partitioner):
        batch = abstract_batch(partitioner, prompts=(rows, lengths.prompt),
                               responses=(rows, lengths.response))
        return inference.sequence_scorer(config, partitioner, chunks).lower(
            abstract_params(config, partitioner), batch["prompts"], batch["responses"])
    return StageFunction("reference scorer", f"{rows} responses of {lengths.response} tokens to "
                         f"{lengths.prompt}-token prompts", rows, config, lower)


STAGE_FUNCTIONS = (preference_train_step, sampler, ranker_scorer, reference_scorer)
FUNCTION_FLAGS = {"train_step": preference_train_step, "sampler": sampler,
                  "ranker_scorer": ranker_scorer, "reference_scorer": reference_scorer}
