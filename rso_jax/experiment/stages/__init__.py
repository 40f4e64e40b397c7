"""The experiment's stages, in the order they run; each module's `STAGE` record (`stage.Stage`)
declares what it reads, its settings and how it runs.

  sft         train the policy on SFT targets                    -> sft/params
  ranker      train the pairwise reward-ranker (flipped pairs)   -> ranker/params
  sample      N candidates per prompt from the SFT policy, plus
              one more random decode per prompt as the baseline  -> sample/samples.npz
  score       eq. 7 rewards against the baseline                 -> score/rewards.npz
  select      kept responses paired (rso, sft, top_k_over_n, direct;
              PAIR_RULE), or SFT targets (raft, rest)              -> select/pairs.npz or
                                                                    select/targets.npz
  reference   SFT log-probs of every pair, computed once (pairs)  -> reference/logps.npz
  preference  the policy trained from SFT: the preference LOSS on
              the pairs, or SFT on the targets; keeps the
              checkpoint with the best proxy win rate against the
              SFT targets on validation prompts                   -> preference/params
  evaluate    decode held-out prompts; win rates against the SFT
              target and the SFT policy, proxy ranker and gold    -> results.json, results.md

With ROUNDS > 1, sample to evaluate run again in each later round, in round_<r>/ (`rounds`).
"""

from rso_jax.experiment import rounds
from rso_jax.experiment.stage import Stage
from rso_jax.experiment.stages import (evaluate, preference, rank, reference, sample, score,
                                       select, sft)

RECORDS: tuple[Stage, ...] = tuple(module.STAGE for module in (
    sft, rank, sample, score, select, reference, preference, evaluate))
STAGES = tuple(record.name for record in RECORDS)
_BY_NAME = {record.name: record for record in RECORDS}


def record(name: str) -> Stage:
    """The record of the work directory's stage `name` (of any round)."""
    return _BY_NAME[rounds.base_stage(name)]


def applies(experiment, stage: str) -> bool:
    """Whether `stage` (of any round) is part of this experiment's method: the last stage is,
    and so is every stage that a stage of the method reads (the records' `reads` are the one
    declaration of the graph: `direct` reads no samples, response training no reference)."""
    needed = {RECORDS[-1].name}
    for later in reversed(RECORDS):
        if later.name in needed:
            needed.update(later.reads(experiment))
    return rounds.base_stage(stage) in needed


def stage_names(experiment, stages=STAGES) -> list[str]:
    """The work directory's stages that `stages` (base names) ask for, in the order they run:
    the first round's, then each later round's ('round_2/sample', ...)."""
    return [rounds.stage_name(stage, round_index)
            for round_index in range(1, experiment.rounds + 1) for stage in stages
            if (round_index == 1 or stage in rounds.ROUND_STAGES)
            and applies(experiment, stage)]
