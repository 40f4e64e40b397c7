"""Reward models and judges.

  pairwise       RSO's T5 reward-ranker: P(A better) from one decoder step, eq. (7) rewards
  pointwise      RS-DPO's T5 with a scalar head (its model spec and jitted scorer)
  bradley_terry  eq. (6) on the host: a preference probability from two rewards
  autosxs        the AutoSxS protocol: 8 judgements per example, 4 flipped, a 0.35 margin

Which of the two reward models an experiment uses (SCORER) is decided in one place,
`experiment.scorers`; the Bradley-Terry loss is in `training.losses`.
"""
