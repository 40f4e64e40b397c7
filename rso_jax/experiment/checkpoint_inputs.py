"""The checkpoints an experiment is given (T5X, HF or orbax), checked before any stage runs
and restored straight onto the mesh."""

from __future__ import annotations

from typing import Any, Optional

import jax

from rso_jax import checkpoint_formats, t5, partitioning
from rso_jax.experiment.config import Experiment


def given_checkpoints(experiment: Experiment) -> list[tuple[str, str, t5.T5Config]]:
    """(macro name, path, model config it must fit) of every checkpoint the experiment names."""
    entries = [("SFT_CHECKPOINT", experiment.sft_checkpoint, experiment.policy_config),
               ("SFT_INIT_CHECKPOINT", experiment.sft_init_checkpoint, experiment.policy_config),
               ("RANKER_CHECKPOINT", experiment.ranker_checkpoint, experiment.ranker_config),
               ("RANKER_INIT_CHECKPOINT", experiment.ranker_init_checkpoint,
                experiment.ranker_config),
               ("GOLD_RANKER_CHECKPOINT", experiment.gold_ranker_checkpoint,
                experiment.gold_ranker_config),
               ("AUTOSXS_JUDGE_CHECKPOINT", experiment.autosxs_judge_checkpoint,
                experiment.autosxs_judge_config)]
    return [(name, path, config) for name, path, config in entries if path is not None]


def check_all(experiment: Experiment) -> None:
    """Fails, naming the macro, the path and any mismatched keys, unless every given
    checkpoint exists and fits its model size (shapes only: no weights are read)."""
    for name, path, config in given_checkpoints(experiment):
        checkpoint_formats.check_fits(path, config, name)


def restore(path: str, name: str, config: t5.T5Config,
            partitioner: partitioning.Partitioner) -> Any:
    return checkpoint_formats.restore(path, config, partitioner, name)


def initial_params(path: Optional[str], name: str, config: t5.T5Config,
                   partitioner: partitioning.Partitioner, seed: int) -> Any:
    """Where a training stage starts: the given checkpoint, else a random initialisation
    (from `seed`), created directly in its shards."""
    if path is None:
        return partitioner.init_params(config, jax.random.PRNGKey(seed))
    return restore(path, name, config, partitioner)
