"""Iterative rounds (ROUNDS): which work-directory stage each round's stage is, and which
policies it reads.

The SFT policy and the ranker are trained once. Round 1's stages are the experiment's usual
directories (`sample/`, ..., `evaluate/` and `results.json` at the top of WORK_DIR), so that
a one-round run and the first round of a longer one are the same work. Round r > 1 keeps its
stages in `round_<r>/` (`round_2/sample/`, ..., `round_2/results.json`): it samples from the
previous round's trained policy, starts training from it, and takes its reference
log-probabilities from the SFT policy or from the previous round's (REFERENCE_POLICY). The eq. 7
baseline decode stays a decode of the SFT policy in every round (PAPERS.md), so that rewards
of all rounds are against the same kind of baseline.
"""

from __future__ import annotations

import os

# The stages every round runs again (the others run once, in the first round).
ROUND_STAGES = ("sample", "score", "select", "reference", "preference", "evaluate")
_PREFIX = "round_"
ROUND_KEY_TAG = 0x726F756E  # folded into later rounds' random keys, apart from stages' own folds


def stage_name(stage: str, round_index: int) -> str:
    """The work directory's name for `stage` of round `round_index` ('round_2/sample')."""
    if round_index == 1 or stage not in ROUND_STAGES:
        return stage
    return f"{_PREFIX}{round_index}/{stage}"


def base_stage(name: str) -> str:
    """'round_2/sample' -> 'sample'."""
    return name.rsplit("/", 1)[-1]


def round_of(name: str) -> int:
    """'round_2/sample' -> 2; a first-round or shared stage -> 1."""
    if "/" not in name:
        return 1
    return int(name.split("/", 1)[0][len(_PREFIX):])


def round_dir(work_dir: str, round_index: int) -> str:
    """Where a round's stage directories and results are."""
    return work_dir if round_index == 1 else os.path.join(work_dir, f"{_PREFIX}{round_index}")


def previous_policy(round_index: int) -> str:
    """The policy a round samples from and starts training from."""
    return "sft" if round_index == 1 else stage_name("preference", round_index - 1)


def reference_policy(experiment, round_index: int) -> str:
    """The policy whose log-probabilities are a round's reference."""
    return "sft" if experiment.reference_policy == "sft" else previous_policy(round_index)
