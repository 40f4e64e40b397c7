"""Which sampled responses to learn from: the selection rules, the pair rules and SFT targets.

  candidate_sets      the `Selection` type (kept responses per prompt) and candidate bit sets
  rejection_sampling  statistical rejection sampling, RSO's Algorithm 1
  subsampling         top-k-over-N, a uniform sub-sample (its beta -> 0 and inf limits) and
                      best-of-N over disjoint groups of samples
  theory              best-of-N KL, Theorem 1's acceptance rate, the tilted distribution
  pair_rules          preference pairs: RSO's rank rules, RS-DPO's and best-vs-worst/random
  sft_targets         SFT targets of the best-of-N baselines (RAFT, ReST)
"""
