"""The training loop: progress, evaluation, metric logs and orbax checkpoints that resume exactly.

A run directory holds:
  checkpoints/<step>/     orbax: the TrainState (params, optimizer state, step, PRNG key) and
                          a JSON item with the data position and the operative gin config;
                          checksums.json: size and SHA-256 of its files (checkpoint_checksums)
  checkpoints/operative_config.gin
  checkpoints_unusable/   step directories (and best/) that could not be used, moved aside on
                          resume (checkpoint_resume)
  metrics.jsonl           one JSON object per logged step or evaluation
  tensorboard/            event files (when tensorboardX is installed)
  best/                   parameters of the best evaluation so far (pluggable metric),
                          best.json and checksums.json

Resuming restores the state and the data position from the newest checkpoint whose files match
their checksums and that restores, so a run killed after a checkpoint and started again ends
with exactly the parameters of an uninterrupted run.
A non-finite loss stops the run before anything is saved, naming the step and the newest
checkpoint whose files match their checksums; the checkpoints stay as they were.
Ctrl-C (SIGINT) or SIGTERM (what TPU VMs, GCE, SLURM and Kubernetes send before they stop a
job) ends the step in progress, saves a checkpoint at that step, waits for the save and raises
`Preempted` (`stop_signals`); running again resumes there and ends exactly as an uninterrupted
run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import sys
import time
from typing import Any, Callable, Iterator, Optional

import jax
import numpy as np

from rso_jax import model_spec
from rso_jax.training import checkpoint_checksums, checkpoint_resume, train_steps
from rso_jax.runtime import atomic_io, processes, run_info, stop_signals
from rso_jax.weights import orbax_params

logger = logging.getLogger(__name__)

BatchSource = Callable[[int], Iterator[Any]]  # data position -> iterator of batches from there
Evaluator = Callable[[Any], dict[str, float]]  # params -> metrics


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stopped without saving the bad state."""


class Preempted(stop_signals.Stopped):
    """Ctrl-C or SIGTERM: training saved a checkpoint at its current step and stopped; run
    again to resume from it."""


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """When to log, evaluate and checkpoint (bound in gin)."""

    num_steps: int  # optimizer steps in total (a resumed run continues up to this).
    checkpoint_every: int = 100  # steps between checkpoints; the last step is always saved.
    keep_checkpoints: int = 3  # most recent checkpoints kept.
    log_every: int = 10  # steps between metric lines.
    eval_every: int = 0  # steps between evaluations; 0 = only at the end (if an evaluator).
    best_metric: Optional[str] = None  # evaluation metric that selects best/ (e.g. 'win_rate').
    best_mode: str = "max"  # 'max' or 'min'.
    async_checkpointing: bool = True  # orbax writes in the background while training goes on.
    progress_bar: bool = True  # a bar on a terminal (log lines when stderr is redirected)
    name: str = "train"  # what the progress bar and log lines call this loop (e.g. 'sft').

    def __post_init__(self):
        if self.num_steps < 0 or self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError(f"LoopConfig needs num_steps >= 0 and positive intervals: {self}.")
        if self.best_mode not in ("max", "min"):
            raise ValueError(f"LoopConfig.best_mode must be 'max' or 'min', got {self.best_mode!r}.")


class MetricsLog:
    """metrics.jsonl plus TensorBoard events (if tensorboardX is available)."""

    def __init__(self, work_dir: str, resumed_from: Optional[int] = None):
        """Opens the logs (the first process's; the others log nothing); after a resume, drops
        what was logged past the restored step."""
        self.path = os.path.join(work_dir, "metrics.jsonl")
        self.active = processes.is_writer()
        if self.active and resumed_from is not None and os.path.isfile(self.path):
            self._truncate_after(resumed_from)
        self.writer = None
        if not self.active:
            return
        try:
            SummaryWriter = _summary_writer_class()
            purge_step = None if resumed_from is None else resumed_from + 1
            self.writer = SummaryWriter(os.path.join(work_dir, "tensorboard"),
                                        purge_step=purge_step)
        except ImportError:
            logger.warning("tensorboardX is not installed: metrics go to %s only.", self.path)

    def _truncate_after(self, step: int) -> None:
        kept = []
        with open(self.path) as stream:
            for line in stream:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
                if record.get("step", 0) <= step:
                    kept.append(json.dumps(record, sort_keys=True) + "\n")
        atomic_io.write_text(self.path, "".join(kept))

    def write(self, step: int, metrics: dict[str, float], prefix: str = "") -> None:
        if not self.active:
            return
        record = {"step": step, **{prefix + k: v for k, v in metrics.items()}}
        with open(self.path, "a") as stream:
            stream.write(json.dumps(record, sort_keys=True) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(prefix + key, value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _summary_writer_class() -> type:
    """tensorboardX's SummaryWriter, imported without PyTorch. tensorboardX imports torch when
    it is installed only to recognise torch tensors among the values it is given; the values
    here are floats, and the import cost each run's process 1.5 to 2 s (measured on two cores)."""
    torch_blocked = "torch" not in sys.modules
    if torch_blocked:
        sys.modules["torch"] = None  # `import torch` raises ImportError while this is set
    try:
        from tensorboardX import SummaryWriter
    finally:
        if torch_blocked and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return SummaryWriter


def _to_floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {key: float(np.asarray(value)) for key, value in jax.device_get(metrics).items()}


# Everything `train` keeps in a run directory (see the module docstring).
RUN_STATE_NAMES = (checkpoint_resume.CHECKPOINTS_DIR, checkpoint_resume.UNUSABLE_CHECKPOINTS_DIR,
                   "metrics.jsonl", "tensorboard", checkpoint_resume.BEST_DIR)


def _is_better(value: float, best: Optional[float], mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


def train(state: train_steps.TrainState, train_step: Callable, batches: BatchSource, work_dir: str,
          loop: LoopConfig, *, model_config: model_spec.ModelSpec,
          evaluate: Optional[Evaluator] = None) -> tuple[train_steps.TrainState, dict[str, Any]]:
    """Trains from the latest checkpoint in `work_dir` (or from `state`) up to loop.num_steps.

    Args:
      state: the initial state, placed on the mesh (its shardings are reused on restore).
      train_step: jitted `(state, batch) -> (state, metrics)` with a 'loss' metric.
      batches: data position -> iterator of batches starting there (deterministic).
      work_dir: run directory (created).
      loop: schedule.
      model_config: the trained model's config (any ModelSpec), written beside the best
        parameters.
      evaluate: optional `params -> metrics` for periodic evaluation and best/ selection.

    Returns:
      (final state, summary dict with 'step', 'resumed_from', 'last_metrics', 'best' and
      'seconds_before_resume': the training time of earlier attempts up to the checkpoint
      this one resumed from).

    Raises:
      NonFiniteLossError: the loss became NaN or infinite (nothing was saved for that step).
      Preempted: Ctrl-C or SIGTERM arrived; a checkpoint of the step it ended was saved (and
        waited for).
    """
    os.makedirs(work_dir, exist_ok=True)
    checkpoint_dir = os.path.join(work_dir, checkpoint_resume.CHECKPOINTS_DIR)
    manager, restored, resumed_from, started_over = checkpoint_resume.restore_newest_usable(
        checkpoint_dir, state, loop.keep_checkpoints, loop.async_checkpointing)
    run_info.write_gin_config(checkpoint_dir)
    run = _Run.resumed(state, restored, resumed_from, checkpoint_dir,
                       checkpoint_resume.read_best(_best_path(work_dir)))
    log = MetricsLog(work_dir, 0 if started_over else resumed_from)
    progress = _progress(loop, start=run.step)
    signals = contextlib.ExitStack()
    signals.enter_context(stop_signals.listening())
    signals.enter_context(stop_signals.deferred())  # evaluations stop only at a step's end
    try:
        _train_steps(run, train_step, batches(run.data_position), loop, manager, checkpoint_dir,
                     resumed_from, progress, log,
                     None if evaluate is None else functools.partial(
                         _evaluate, run, evaluate, loop, log, work_dir, model_config))
    finally:
        signals.close()
        progress.close()
        log.close()
        manager.close()
    return run.state, {"step": run.step, "resumed_from": resumed_from,
                       "last_metrics": run.last_metrics, "best": run.best,
                       "checkpoint_dir": checkpoint_dir,
                       "seconds_before_resume": round(run.seconds_before_resume, 2)}


def _train_steps(run: "_Run", train_step: Callable, iterator: Iterator, loop: LoopConfig,
                 manager: Any, checkpoint_dir: str, resumed_from: Optional[int], progress: Any,
                 log: "MetricsLog", run_evaluation: Optional[Callable[[], None]]) -> None:
    """The steps from `run.step` to `loop.num_steps`, logging, evaluating and saving on their
    schedules; a stop signal saves the step reached and raises Preempted."""
    run.start_time = time.perf_counter()
    saved_step = resumed_from
    stopping = None
    while run.step < loop.num_steps:
        loss = _one_step(run, train_step, iterator, loop, manager, checkpoint_dir)
        if run.step % loop.log_every == 0 or run.step == loop.num_steps:
            run.log_metrics(log, resumed_from)
            progress.set_postfix(run.step, loss)
        progress.update(1)
        if run_evaluation is not None and loop.eval_every and run.step % loop.eval_every == 0:
            run_evaluation()
        if run.step % loop.checkpoint_every == 0 or run.step == loop.num_steps:
            run.save(manager)
            saved_step = run.step
        stopping = stop_signals.agreed()  # every process: all stop here
        if stopping is not None:
            break
    if stopping is not None:
        if saved_step != run.step:
            run.save(manager)
        manager.wait_until_finished()
        raise Preempted(f"{stop_signals.describe(stopping)}; saved a checkpoint at step "
                        f"{run.step} of {loop.num_steps} in {checkpoint_dir} and stopped. "
                        "Run the same command again to resume from it.", stopping)
    if run_evaluation is not None and (not loop.eval_every or run.step % loop.eval_every):
        run_evaluation()
    manager.wait_until_finished()


@dataclasses.dataclass
class _Run:
    """What the loop carries from step to step, and writes into each checkpoint."""

    state: train_steps.TrainState
    step: int
    data_position: int = 0
    seconds_before_resume: float = 0.0  # training time of earlier attempts, to their checkpoint
    last_metrics: dict = dataclasses.field(default_factory=dict)
    best: Optional[dict] = None
    start_time: float = 0.0
    metrics: dict = dataclasses.field(default_factory=dict)  # the last step's, on the device

    @classmethod
    def resumed(cls, state: train_steps.TrainState, restored: Any, resumed_from: Optional[int],
                checkpoint_dir: str, best: Optional[dict]) -> "_Run":
        """The run from the initial `state`, or from the `restored` checkpoint's items."""
        if restored is None:
            return cls(state, int(jax.device_get(state.step)), best=best)
        run = cls(restored.state, int(jax.device_get(restored.state.step)),
                  data_position=int(restored.progress["data_position"]),
                  seconds_before_resume=float(restored.progress.get("elapsed_seconds", 0.0)),
                  last_metrics=dict(restored.progress.get("last_metrics", {})), best=best)
        logger.info("Resumed from step %d (data position %d) in %s", resumed_from,
                    run.data_position, checkpoint_dir)
        return run

    def save(self, manager: Any) -> None:
        """A checkpoint of this step: the train state and the loop's progress."""
        import orbax.checkpoint as ocp

        progress = {"step": self.step, "data_position": self.data_position,
                    "gin_config": run_info.gin_config_text(), "last_metrics": self.last_metrics,
                    "elapsed_seconds": self.seconds_before_resume + time.perf_counter()
                    - self.start_time}
        manager.save(self.step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(self.state), progress=ocp.args.JsonSave(progress)))

    def log_metrics(self, log: "MetricsLog", resumed_from: Optional[int]) -> None:
        self.last_metrics = _to_floats(self.metrics)
        self.last_metrics["steps_per_second"] = (self.step - (resumed_from or 0)) / (
            time.perf_counter() - self.start_time)
        log.write(self.step, self.last_metrics, prefix="train/")


def _one_step(run: _Run, train_step: Callable, iterator: Iterator, loop: LoopConfig,
              manager: Any, checkpoint_dir: str) -> float:
    """Trains on the next batch; returns its loss. Raises NonFiniteLossError (saving nothing
    for the step) when the loss is NaN or infinite."""
    try:
        batch = next(iterator)
    except StopIteration:
        raise ValueError(f"The data ran out at position {run.data_position} before step "
                         f"{loop.num_steps}; make the batch source repeat.") from None
    state, run.metrics = train_step(run.state, batch)
    loss = float(jax.device_get(run.metrics["loss"]))
    if not math.isfinite(loss):
        manager.wait_until_finished()
        raise NonFiniteLossError(
            f"Loss is {loss} at step {run.step + 1} (data position {run.data_position}); "
            f"training stopped and nothing was saved for this step. "
            + checkpoint_resume.last_good_checkpoint(manager, checkpoint_dir)
            + "Lower the learning rate or inspect that batch.")
    run.state = state
    run.step += 1
    run.data_position += 1
    return loss


def _best_path(work_dir: str) -> str:
    return os.path.join(work_dir, checkpoint_resume.BEST_DIR, checkpoint_resume.BEST_FILE)


def _evaluate(run: _Run, evaluate: Evaluator, loop: LoopConfig, log: "MetricsLog",
              work_dir: str, model_config: model_spec.ModelSpec) -> None:
    """Evaluates the current parameters; keeps them in best/ when they are the best so far
    by `loop.best_metric`."""
    metrics = {k: float(v) for k, v in evaluate(run.state.params).items()}
    log.write(run.step, metrics, prefix="eval/")
    logger.info("step %d eval %s", run.step, metrics)
    if not loop.best_metric:
        return
    if loop.best_metric not in metrics:
        raise KeyError(f"LoopConfig.best_metric={loop.best_metric!r} is not among the "
                       f"evaluation metrics {sorted(metrics)}.")
    value = metrics[loop.best_metric]
    if _is_better(value, None if run.best is None else run.best["value"], loop.best_mode):
        run.best = {"step": run.step, "metric": loop.best_metric, "value": value}
        best_dir = os.path.join(work_dir, checkpoint_resume.BEST_DIR)
        orbax_params.save_params(run.state.params, model_config, best_dir)  # every process
        atomic_io.write_json(_best_path(work_dir), run.best)
        checkpoint_checksums.write(best_dir)


class _LoggedProgress:
    """Progress as log lines (one per logged step): for logs redirected to a file, which a
    progress bar would fill with carriage returns."""

    def __init__(self, loop: LoopConfig):
        self.loop = loop

    def update(self, n):
        pass

    def set_postfix(self, step: int, loss: float):
        logger.info("%s step %d/%d loss %.4f", self.loop.name, step, self.loop.num_steps, loss)

    def close(self):
        pass


class _ProgressBar:
    def __init__(self, bar):
        self.bar = bar

    def update(self, n):
        self.bar.update(n)

    def set_postfix(self, step: int, loss: float):
        self.bar.set_postfix(loss=f"{loss:.4f}")

    def close(self):
        self.bar.close()


def _progress(loop: LoopConfig, start: int):
    """A progress bar on a terminal; log lines when stderr goes elsewhere or no bar is wanted."""
    import sys

    if not loop.progress_bar or not sys.stderr.isatty() or not processes.is_writer():
        return _LoggedProgress(loop)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _LoggedProgress(loop)
    return _ProgressBar(tqdm(total=loop.num_steps, initial=start, desc=loop.name, unit="step",
                             dynamic_ncols=True))
