"""A training stage's batches: each micro-batch's rows must split evenly over the data axis."""

import re

import pytest

from rso_jax import partitioning
from rso_jax.experiment import training_runs
from rso_jax.experiment.config import TrainingSchedule


def test_micro_batches_that_the_data_axis_does_not_divide_are_refused_naming_the_settings():
    mesh = partitioning.create_partitioner(data_parallelism=8, model_parallelism=1)
    training_runs.check_microbatch_rows(
        TrainingSchedule(batch_size=32, grad_accum_steps=4, stage="preference"), mesh)
    with pytest.raises(ValueError, match=re.escape(
            "PREFERENCE_BATCH_SIZE=32 in 8 micro-batch(es) (PREFERENCE_GRAD_ACCUM_STEPS, "
            "NUM_MICROBATCHES unless set) makes 4 rows each, which the mesh's data axis (8 "
            "devices) does not divide")):
        training_runs.check_microbatch_rows(
            TrainingSchedule(batch_size=32, grad_accum_steps=8, stage="preference"), mesh)
    with pytest.raises(ValueError, match=re.escape("SFT_BATCH_SIZE=12 in 1 micro-batch(es)")):
        training_runs.check_microbatch_rows(TrainingSchedule(batch_size=12, stage="sft"), mesh)
