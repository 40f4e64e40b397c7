"""A training stage's loop: batches cycling over epochs, the train step on the mesh, resume."""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import jax
import numpy as np

from rso_jax import model_spec, partitioning
from rso_jax.training import train_loop, train_steps
from rso_jax.weights import orbax_params
from rso_jax.experiment import artifacts
from rso_jax.experiment.config import TrainingSchedule, setting


def cycling_batches(arrays: dict[str, np.ndarray], batch_size: int, seed: int,
                    make_batch: Callable[..., Any], partitioner: partitioning.Partitioner):
    """Batch source for train_loop: epoch e visits the rows in permutation(seed, e); each
    process makes and places its own rows of every batch (the order does not depend on the
    number of processes)."""
    count = len(next(iter(arrays.values())))
    per_epoch = count // batch_size
    host_rows = partitioner.host_rows(batch_size)  # this process's rows of every batch
    if per_epoch == 0:
        raise ValueError(f"{count} examples cannot fill one batch of {batch_size}; lower the "
                         "batch size or give more data.")

    def source(position: int):
        while True:
            epoch, index = divmod(position, per_epoch)
            order = np.random.default_rng([seed, epoch]).permutation(count)
            rows = order[index * batch_size:(index + 1) * batch_size][host_rows]
            yield partitioner.shard_batch(make_batch(**{k: v[rows] for k, v in arrays.items()}),
                                          batch_size)
            position += 1
    return source


def run_training(name: str, schedule: TrainingSchedule, work_dir: str,
                 model_config: model_spec.ModelSpec, params: Any, loss_fn: Callable,
                 arrays: dict[str, np.ndarray], make_batch: Callable[..., Any],
                 partitioner: partitioning.Partitioner,
                 evaluate: Optional[Callable] = None,
                 best_metric: Optional[str] = None,
                 remat_policy: str = "none") -> tuple[Any, dict]:
    """Trains stage `name` (resuming from its checkpoints) and saves its final parameters
    (the best ones when `best_metric` is given) as the stage's `params`. `loss_fn` takes
    `remat_policy` (REMAT_POLICY: what its model's layers keep for the backward pass).

    Returns:
      (parameters on the mesh, the loop's summary).
    """
    check_microbatch_rows(schedule, partitioner)
    directory = artifacts.stage_dir(work_dir, name)
    optimizer = schedule.make_optimizer()
    example = make_batch(**{k: v[: schedule.batch_size] for k, v in arrays.items()})
    step = train_steps.make_train_step(partitioner, model_config, optimizer, loss_fn, example,
                                       grad_accum_steps=schedule.grad_accum_steps,
                                       remat_policy=remat_policy)
    state = train_steps.place_state(partitioner, model_config, optimizer, params,
                                 jax.random.PRNGKey(schedule.seed))
    loop = train_loop.LoopConfig(
        num_steps=schedule.steps, checkpoint_every=schedule.checkpoint_every,
        log_every=max(1, min(50, schedule.steps // 10)),
        eval_every=(schedule.eval_every or schedule.steps // 2) if evaluate else 0,
        best_metric=best_metric, name=name)
    batches = cycling_batches(arrays, schedule.batch_size, schedule.seed, make_batch, partitioner)
    state, summary = train_loop.train(state, step, batches, directory, loop,
                                      model_config=model_config, evaluate=evaluate)
    params = state.params
    if summary["best"] is not None:
        params = orbax_params.restore_params(os.path.join(directory, "best"), model_config,
                                            partitioner.param_shardings(model_config))
    artifacts.save_params(work_dir, name, params, model_config)
    return params, summary


def check_microbatch_rows(schedule: TrainingSchedule, partitioner: partitioning.Partitioner
                          ) -> None:
    """Each micro-batch's rows split evenly over the mesh's data axis (else XLA would move
    rows between devices, or pad them, in every step)."""
    data = partitioner.mesh.shape["data"]
    rows = schedule.batch_size // schedule.grad_accum_steps
    if rows % data:
        batch_size, accumulation = (setting(schedule, field)
                                    for field in ("batch_size", "grad_accum_steps"))
        raise ValueError(f"{batch_size}={schedule.batch_size} in {schedule.grad_accum_steps} "
                         f"micro-batch(es) ({accumulation}, NUM_MICROBATCHES unless set) makes "
                         f"{rows} rows each, which the mesh's data axis ({data} devices) does "
                         "not divide: choose a batch size and micro-batch count whose quotient "
                         f"is a multiple of {data}, or another DATA_PARALLELISM.")


def resume_summary(summary: dict) -> dict:
    """What a stage's DONE marker says of a training run that was resumed; the runner adds
    `seconds_before_resume` (training time of the earlier attempts, up to the checkpoint
    resumed from) to the stage's `seconds`."""
    if summary["resumed_from"] is None:
        return {}
    return {"resumed_from_step": summary["resumed_from"],
            "seconds_before_resume": summary["seconds_before_resume"]}
