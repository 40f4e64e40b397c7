"""Which checkpoint a training run resumes from, and what it sets aside.

A run directory's checkpoints are tried newest first. One is used when its files match their
checksums (`checkpoint_checksums`), it restores, and its parameters are all finite; each newer
one is moved, whole, to `checkpoints_unusable/` beside `checkpoints/`, with a warning naming it
and why, so that training redoes its steps and saves them again. The parameters of the best
evaluation so far (`best/`) are checked against their checksums too (see
`restore_newest_usable`).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional

import jax

from rso_jax.training import checkpoint_checksums, train_steps
from rso_jax.runtime import processes

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"  # in the run directory: one directory per kept step
STATE_ITEM = "state"  # in a step's directory: the train state (params, opt_state, rng, step)
UNUSABLE_CHECKPOINTS_DIR = "checkpoints_unusable"
BEST_DIR = "best"  # in the run directory: the best evaluation's parameters ...
BEST_FILE = "best.json"  # ... and in it, its step, metric and value


def checkpoint_manager(directory: str, max_to_keep: int,
                       asynchronous: bool) -> checkpoint_checksums.ChecksummedCheckpointManager:
    """The orbax manager of a run's checkpoints (`state` and `progress` items), keeping the
    newest `max_to_keep`, saving in the background when `asynchronous`, with checksums."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=asynchronous)
    directory = os.path.abspath(directory)
    return checkpoint_checksums.ChecksummedCheckpointManager(
        ocp.CheckpointManager(directory, options=options, item_names=(STATE_ITEM, "progress")),
        directory, companions=[os.path.join(os.path.dirname(directory), BEST_DIR)])


def _restore_checked(manager: checkpoint_checksums.ChecksummedCheckpointManager, path: str,
                     step: int, state: train_steps.TrainState) -> tuple[Any, Optional[str]]:
    """(restored items, None), or (None, why `step` is unusable): its files must match their
    checksums (compared before orbax reads them), restore, and hold finite parameters. Every
    process gets the same answer (and runs the same collectives)."""
    import orbax.checkpoint as ocp

    problem = checkpoint_checksums.mismatch(
        path, unrecorded_ok=not checkpoint_checksums.keeps_checksums(os.path.dirname(path)))
    if problem is not None:
        return None, problem
    restored, fatal = None, None
    try:
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract_state(state)),
            progress=ocp.args.JsonRestore()))
        int(restored.progress["data_position"])
    except (MemoryError, jax.errors.JaxRuntimeError) as error:
        fatal = error  # out of device memory, a device failure: nothing says files are bad
    except Exception as error:  # orbax raises KeyError, ValueError, FileNotFoundError...
        problem = (f"{type(error).__name__}: "
                   + (str(error).splitlines()[0][:300] if str(error) else ""))
    if processes.any_process(fatal is not None):
        raise fatal or RuntimeError(f"Another process failed restoring {path} with a device "
                                    "error; see its log.")
    if processes.any_process(problem is not None):
        return None, problem or "it could not be restored by another process"
    if not _all_finite(restored.state.params):
        return None, "its parameters are not all finite"
    return restored, None


def step_params(checkpoint_dir: str, step: int) -> Any:
    """The parameters (host arrays) of the checkpoint of `step` in `checkpoint_dir`, after its
    files were compared with their checksums as a resumed run compares them; ValueError naming
    the step and what is wrong (not kept: the steps that are; changed files: the first one)."""
    import orbax.checkpoint as ocp

    path = os.path.join(checkpoint_dir, str(step))
    if not os.path.isdir(os.path.join(path, STATE_ITEM)):
        raise ValueError(f"no checkpoint of step {step} ({path} does not exist; kept: "
                         f"{checkpoint_checksums.saved_steps(checkpoint_dir) or 'none'})")
    problem = checkpoint_checksums.mismatch(
        path, unrecorded_ok=not checkpoint_checksums.keeps_checksums(checkpoint_dir))
    if problem is not None:
        raise ValueError(f"the checkpoint of step {step} ({path}) is not as saved: {problem}")
    return ocp.StandardCheckpointer().restore(
        os.path.abspath(os.path.join(path, STATE_ITEM)))["params"]


def _check_best(best_dir: str, unrecorded_ok: bool) -> tuple[bool, Optional[int]]:
    """(whether `best_dir` must be set aside, the step training must resume before or None).

    Best parameters whose files do not match their checksums are set aside, and training
    resumes before the step of their evaluation (from step 0 when their best.json cannot be
    read either), to evaluate it again. With no best.json (a kill before it was written) there
    is nothing to redo: the step it would name was not saved either."""
    if not os.path.isdir(best_dir):
        return False, None
    problem = checkpoint_checksums.mismatch(best_dir, unrecorded_ok)
    if problem is None:
        return False, None
    try:
        best = read_best(os.path.join(best_dir, BEST_FILE))
    except ValueError:
        best = {"step": 0}
    redo = ("" if best is None else "; training starts over" if best["step"] == 0
            else f"; training resumes before step {best['step']} and evaluates it again")
    logger.warning("The best parameters so far, in %s, cannot be used (%s)%s.", best_dir, problem,
                   redo)
    return True, None if best is None else int(best["step"])


def restore_newest_usable(checkpoint_dir: str, state: train_steps.TrainState, max_to_keep: int,
                          asynchronous: bool):
    """The run's checkpoints and the newest one that can be used.

    That is the newest whose files match their checksums and that restores with finite
    parameters. Newer ones (an empty step directory, a file changed since it was saved, no
    checksums: `checkpoint_checksums`) are moved to `checkpoints_unusable/` beside
    `checkpoint_dir`, saying so, so that training redoes their steps and saves them again. When
    none is left, the best parameters of the abandoned work go there too. So do best parameters
    whose files do not match their checksums, with the checkpoints saved from their evaluation's
    step on: training evaluates that step again, which gives the same parameters and value, and
    a value better than those of the evaluations before it (or they would have been best).

    Args:
      checkpoint_dir: the run's `checkpoints/` directory.
      state: the initial state: the restored one gets its shapes and shardings.
      max_to_keep: how many checkpoints the returned manager keeps.
      asynchronous: whether the returned manager saves in the background.

    Returns:
      (its `checkpoint_manager`, the restored items or None, their step or None, whether
      earlier work was set aside and training starts over).
    """
    manager = checkpoint_manager(checkpoint_dir, max_to_keep, asynchronous)
    run_dir = os.path.dirname(checkpoint_dir)
    best_dir = os.path.join(run_dir, BEST_DIR)
    best_damaged, evaluate_again = _check_best(
        best_dir, unrecorded_ok=not checkpoint_checksums.keeps_checksums(checkpoint_dir))
    restored, step, unusable = _newest_restorable(manager, checkpoint_dir, state, evaluate_again)
    best_unusable = best_damaged or (step is None and os.path.isdir(best_dir))
    if not unusable and not best_unusable:
        return manager, restored, step, False
    manager.close()
    moves = [(os.path.join(checkpoint_dir, str(candidate)), str(candidate))
             for candidate in unusable]
    if best_unusable:
        moves.append((best_dir, BEST_DIR))
    aside = _set_aside(run_dir, moves, checkpoint_dir)
    logger.warning("Moved %s to %s; %s.",
                   " and ".join(([f"the unusable checkpoints (steps "
                                  f"{', '.join(map(str, unusable))})"] if unusable else [])
                                + (["the best parameters so far"] if best_unusable else [])),
                   aside,
                   f"resuming from step {step}, the newest valid one" if step is not None
                   else "no valid checkpoint is left, so training starts from step 0")
    return (checkpoint_manager(checkpoint_dir, max_to_keep, asynchronous), restored, step,
            step is None)


def _newest_restorable(manager: Any, checkpoint_dir: str, state: train_steps.TrainState,
                       evaluate_again: Optional[int]) -> tuple[Any, Optional[int], list[int]]:
    """(the restored items or None, their step or None, the newer steps that cannot be used),
    newest first; a step saved after `evaluate_again` (a step whose evaluation is redone) is
    not used."""
    unusable = []
    for candidate in sorted(manager.all_steps(), reverse=True):
        path = os.path.join(checkpoint_dir, str(candidate))
        if evaluate_again is not None and candidate >= evaluate_again:
            problem = f"it was saved after the evaluation of step {evaluate_again}"
        else:
            restored, problem = _restore_checked(manager, path, candidate, state)
        if problem is None:
            return restored, candidate, unusable
        logger.warning("Checkpoint %s cannot be restored (%s).", path, problem)
        unusable.append(candidate)
    return None, None, unusable


def _set_aside(run_dir: str, moves: list[tuple[str, str]], checkpoint_dir: str) -> str:
    """Moves each (source, name) into the run's UNUSABLE_CHECKPOINTS_DIR (a name taken gets a
    numbered suffix); returns that directory."""
    aside = os.path.join(run_dir, UNUSABLE_CHECKPOINTS_DIR)
    if processes.is_writer():
        os.makedirs(aside, exist_ok=True)
        for source, name in moves:
            target, suffix = os.path.join(aside, name), 1
            while os.path.exists(target):
                target, suffix = os.path.join(aside, f"{name}.{suffix}"), suffix + 1
            os.replace(source, target)
    processes.barrier(f"unusable checkpoints of {checkpoint_dir} moved")
    return aside


@jax.jit
def _all_finite_on_devices(tree: Any) -> jax.Array:
    return jax.numpy.stack([jax.numpy.isfinite(leaf).all()
                            for leaf in jax.tree_util.tree_leaves(tree)]).all()


def _all_finite(tree: Any) -> bool:
    """Whether every array of `tree` is finite: one jitted computation and one transfer to
    the host. (Not one eager reduction per array: with several processes on CPU devices,
    hundreds of such small computations in flight at once, each with a collective over the
    model axis, deadlocked a process in 2 of 2 tries.)"""
    return bool(jax.device_get(_all_finite_on_devices(tree)))


def _abstract_state(state: train_steps.TrainState) -> Any:
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def last_good_checkpoint(manager: checkpoint_checksums.ChecksummedCheckpointManager,
                          checkpoint_dir: str) -> str:
    """A sentence naming the checkpoint a rerun would resume from: the newest whose files
    match their checksums (and the newer ones that do not, which the rerun sets aside)."""
    steps = manager.all_steps()
    if not steps:
        return "No checkpoint was saved before it. "
    verified, failures = checkpoint_checksums.newest_verified(checkpoint_dir, steps)
    if verified is None:
        return (f"No checkpoint in {checkpoint_dir} matches its checksums "
                f"({'; '.join(failures)}), so a rerun starts from step 0. ")
    newer = (f" (a rerun sets aside the newer ones: {'; '.join(failures)})" if failures
             else "")
    return (f"The last good checkpoint is step {verified} in {checkpoint_dir}, the newest whose "
            f"files match their checksums{newer}. ")


def read_best(path: str) -> Optional[dict]:
    """best.json: the step, metric and value of the best evaluation so far; None when there is
    none.

    Raises:
      ValueError: it is damaged.
    """
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as stream:
            best = json.load(stream)
        float(best["value"]), int(best["step"])
        return best
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is damaged ({type(error).__name__}: {error}), so the best "
                         "evaluation so far is unknown; delete the directory of this training "
                         f"run ({os.path.dirname(os.path.dirname(path))}) to train it again."
                         ) from error
