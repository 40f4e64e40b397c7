"""The exact test of RSO's central claim, on problems where everything is known in closed form.

  problems      pi_sft, the reward, the policy family, pi_r and the exact measures (KL to pi_r,
                expected reward, win rate against pi_sft, regret of objective (3))
  pair_sources  pairs of a fixed budget from each source (direct, sft-sample-rank,
                rso-sample-rank, top-k-over-N, pi_r itself), with the project's selection and
                pair rules, labelled by Bradley-Terry draws of the ranker's reward
  fit           the policy family fitted with the project's preference losses
  study         the panels (budget, beta, N, misspecification, loss, ranker, pair rule) over
                seeds: `python -m rso_jax.main --gin_file=configs/exact/rso_claim.gin`
  report        tables with 95 % intervals, paired comparisons and verdicts; figures
"""
