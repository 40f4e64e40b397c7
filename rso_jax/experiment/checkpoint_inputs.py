"""The checkpoints an experiment is given (T5X, HF or orbax), checked before any stage runs
and restored straight onto the mesh."""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import jax

from rso_jax import model_spec, partitioning, t5, vocabularies
from rso_jax.weights import formats, orbax_params, tree
from rso_jax.experiment import scorers
from rso_jax.experiment.config import Experiment


EMBEDDING_KEY = "token_embedder/embedding"  # [vocabulary rows, emb_dim] in every format's tree


def given_checkpoints(experiment: Experiment) -> list[tuple[str, str, model_spec.ModelSpec]]:
    """(macro name, path, model config it must fit) of every checkpoint the experiment names."""
    entries = [("SFT_CHECKPOINT", experiment.sft_checkpoint, experiment.policy_config),
               ("SFT_INIT_CHECKPOINT", experiment.sft_init_checkpoint, experiment.policy_config),
               ("RANKER_CHECKPOINT", experiment.ranker_checkpoint,
                scorers.ranker_spec(experiment)),
               ("RANKER_INIT_CHECKPOINT", experiment.ranker_init_checkpoint,
                experiment.ranker_config),
               ("GOLD_RANKER_CHECKPOINT", experiment.gold_ranker_checkpoint,
                experiment.gold_ranker_config),
               ("AUTOSXS_JUDGE_CHECKPOINT", experiment.autosxs_judge_checkpoint,
                experiment.autosxs_judge_config)]
    return [(name, path, config) for name, path, config in entries if path is not None]


def check_all(experiment: Experiment, vocabulary_pieces: int) -> None:
    """Fails, naming the macro, the path and any mismatched keys, unless every given
    checkpoint exists and fits its model size (shapes only: no weights are read). A checkpoint
    that differs only in its vocabulary rows is named with both numbers: one with fewer rows
    than the vocabulary's `vocabulary_pieces` cannot hold it, one with more needs VOCAB_SIZE."""
    for name, path, config in given_checkpoints(experiment):
        if name == "RANKER_CHECKPOINT":
            _check_scorer_kind(path, experiment.scorer)
        try:
            formats.check_fits(path, config, name)
        except tree.ParamTreeMismatchError as error:
            rows = _vocabulary_rows(path, config)
            if rows is None:
                raise
            try:
                vocabularies.check_rows(
                    rows, vocabulary_pieces, f"{name} {path}",
                    "Give a checkpoint trained with the task's vocabulary "
                    f"({experiment.task.vocabulary_file()}), or give the task the vocabulary "
                    "the checkpoint was trained with.")
            except ValueError as too_few:
                raise too_few from error
            raise ValueError(
                f"{name} {path} has {rows} vocabulary rows; the model has VOCAB_SIZE="
                f"{config.vocab_size} (by default the vocabulary's {vocabulary_pieces} pieces "
                f"padded to a multiple of {vocabularies.VOCAB_ROWS_MULTIPLE}). Set "
                f"--gin.VOCAB_SIZE={rows} to use this checkpoint (rows past the vocabulary's "
                "pieces are never sampled).") from error


def _vocabulary_rows(path: str, config: model_spec.ModelSpec) -> Optional[int]:
    """The checkpoint's vocabulary rows when they are all that keeps it from fitting the T5
    `config`; None when it differs in more (or `config` is not a T5)."""
    if not isinstance(config, t5.T5Config):
        return None
    found = formats.param_shapes(path)
    rows = found.get(EMBEDDING_KEY, (None,))[0]
    if rows is None or rows == config.vocab_size:
        return None
    try:
        tree.check_shapes(tree.config_shapes(config.replace(vocab_size=rows)),
                                found, "")
    except tree.ParamTreeMismatchError:
        return None
    return int(rows)


def _check_scorer_kind(path: str, scorer: str) -> None:
    """Refuses, naming SCORER, a ranker checkpoint of our format saved for the other kind of
    reward model (a pointwise model's config holds its T5 under 't5')."""
    config_file = os.path.join(path, orbax_params.MODEL_CONFIG_FILE)
    if not os.path.isfile(config_file):
        return  # T5X or HF: a T5, checked by check_fits
    try:
        with open(config_file) as stream:
            pointwise = "t5" in json.load(stream)
    except (OSError, ValueError):
        return  # check_fits names the damage
    if pointwise != (scorer == "pointwise"):
        kind = "a pointwise reward model" if pointwise else "a pairwise T5 ranker"
        other = "pointwise" if pointwise else "pairwise"
        raise ValueError(f"RANKER_CHECKPOINT {path} holds {kind}, but SCORER={scorer!r}; set "
                         f"--gin.SCORER=\"'{other}'\" or give a checkpoint of the other kind.")


def restore(path: str, name: str, config: model_spec.ModelSpec,
            partitioner: partitioning.Partitioner) -> Any:
    return formats.restore(path, config, partitioner, name)


def initial_params(path: Optional[str], name: str, config: t5.T5Config,
                   partitioner: partitioning.Partitioner, seed: int) -> Any:
    """Where a training stage starts: the given checkpoint, else a random initialisation
    (from `seed`), created directly in its shards."""
    if path is None:
        return partitioner.init_params(config, jax.random.PRNGKey(seed))
    return restore(path, name, config, partitioner)
