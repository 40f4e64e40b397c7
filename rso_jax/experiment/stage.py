"""One record per stage: the only declaration of the experiment's stage graph.

A `Stage` says what the stage reads (other stages' outputs and the task's data), which settings
its outputs depend on, and how it runs. Everything else derives from the records
(`stages.STAGES`, in the order they run): which stages a method has (those its last stage reads,
directly or through others), the fingerprints that decide when a finished stage may be reused
(`fingerprints`), the checks the runner makes before any work (a stage read but not finished, a
task split a stage will ask for), the stages a STAGES subset may name, and which outputs a
running stage may load (`StageContext.for_stage`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from rso_jax.experiment.config import Experiment

# Names a stage's `reads` may use besides other stages' (first-round) names: the policy the
# round samples from and starts training from, and the policy of its reference log-probs.
POLICY, REFERENCE_POLICY = "policy", "reference_policy"


def _nothing(experiment: Experiment) -> tuple:
    return ()


@dataclasses.dataclass(frozen=True)
class Stage:
    """A stage of the experiment.

    Attributes:
      name: its directory's name in WORK_DIR (its first round's; `rounds` names later ones).
      run: `StageContext -> summary dict`, writing the stage's outputs into its directory.
      settings: `Experiment -> dict`, the settings its outputs depend on besides its inputs
        (recorded, with the fingerprints of what it reads, in its DONE marker).
      reads: `Experiment -> names` of the stages whose outputs it reads, in order: first-round
        names, or POLICY / REFERENCE_POLICY for the round's policies.
      task_data: `Experiment -> ((reader, split), ...)`: the task's data it asks for (e.g.
        `(task.sft_examples, 'train')`), read by the runner before any work.
    """

    name: str
    run: Callable[[Any], dict]
    settings: Callable[[Experiment], dict]
    reads: Callable[[Experiment], tuple] = _nothing
    task_data: Callable[[Experiment], tuple] = _nothing
