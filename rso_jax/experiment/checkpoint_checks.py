"""The checkpoints an experiment is given, checked before any stage runs: each exists and fits
the model it is given for (shapes only: no weights are read), and a ranker checkpoint holds the
kind of reward model SCORER names."""

from __future__ import annotations

from typing import Optional

from rso_jax import model_spec, setting_types, t5
from rso_jax.data import vocabularies
from rso_jax.weights import formats, tree
from rso_jax.experiment import scorers
from rso_jax.experiment.config import Experiment


EMBEDDING_KEY = "token_embedder/embedding"  # [vocabulary rows, emb_dim] in every format's tree


def given_checkpoints(experiment: Experiment
                      ) -> list[tuple[str, str, str, model_spec.ModelSpec]]:
    """(field, its macro, path, model config it must fit) of every checkpoint the experiment
    names."""
    models = {"sft_checkpoint": experiment.policy_config,
              "sft_init_checkpoint": experiment.policy_config,
              "ranker_checkpoint": scorers.ranker_spec(experiment),
              "ranker_init_checkpoint": experiment.ranker_config,
              "gold_ranker_checkpoint": experiment.gold_ranker_config,
              "autosxs_judge_checkpoint": experiment.autosxs_judge_config}
    return [(field, setting_types.setting_name("config.Experiment", field),
             getattr(experiment, field), model)
            for field, model in models.items() if getattr(experiment, field) is not None]


def check_all(experiment: Experiment, vocabulary_pieces: int) -> None:
    """Fails, naming the macro, the path and any mismatched keys, unless every given
    checkpoint exists and fits its model size (shapes only: no weights are read). A checkpoint
    that differs only in its vocabulary rows is named with both numbers: one with fewer rows
    than the vocabulary's `vocabulary_pieces` cannot hold it, one with more needs VOCAB_SIZE."""
    for field, name, path, config in given_checkpoints(experiment):
        if field == "ranker_checkpoint":
            scorers.check_saved_kind(path, experiment)
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
