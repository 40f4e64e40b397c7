"""The experiment's stages, in the order they run; each `run(context) -> summary dict`.

  sft         train the policy on SFT targets                    -> sft/params
  ranker      train the pairwise reward-ranker (flipped pairs)   -> ranker/params
  sample      N candidates per prompt from the SFT policy, plus
              one more random decode per prompt as the baseline  -> sample/samples.npz
  score       eq. 7 rewards against the baseline                 -> score/rewards.npz
  select      rso-sample-rank | sft-sample-rank | direct, paired
              (first-round by the ranker, or tournament by eq. 7) -> select/pairs.npz
  reference   SFT log-probs of every pair, computed once          -> reference/logps.npz
  preference  sigmoid-norm | hinge | hinge-norm training from SFT;
              keeps the checkpoint with the best proxy win rate
              against the SFT targets on validation prompts      -> preference/params
  evaluate    decode held-out prompts; win rates against the SFT
              target and the SFT policy, proxy ranker and gold    -> results.json, results.md
"""

from rso_jax.experiment.stages import (evaluate, preference, rank, reference, sample, score,
                                       select, sft)

STAGES = ("sft", "ranker", "sample", "score", "select", "reference", "preference", "evaluate")
RUN = {"sft": sft.run, "ranker": rank.run, "sample": sample.run, "score": score.run,
       "select": select.run, "reference": reference.run, "preference": preference.run,
       "evaluate": evaluate.run}
# Stages that only selection methods working on samples need.
SAMPLING_STAGES = ("sample", "score")
