#!/usr/bin/env bash
# Every number and picture of docs/results.md: the demo sweeps of configs/sweeps/, one after
# another on this machine, then the figures copied into docs/figures/. The sweeps share
# runs/demo/stages (one SFT policy, ranker and sample set per seed), so after Table 1 each runs
# only its new stages; a sweep that was run before reuses all of its finished stages. Each
# sweep's tables are runs/demo/<sweep>/summary.md (mean and std over seeds) and results.md;
# runs/demo/tables.md collects the compact tables of docs/results.md (scripts/results_table.py).
# A sweep with a failed point is named at the end; the others still run.
#
#   bash scripts/reproduce_demo_results.sh            (from any directory)
#   bash scripts/reproduce_demo_results.sh --report   (tables and figures of finished sweeps only)
set -uo pipefail
REPORT=()
if [ "${1:-}" = "--report" ]; then REPORT=(--report); fi
cd "$(dirname "$0")/.."
SWEEPS="table1 table2 beta gamma rs_dpo iterative best_of_n"
failed=""
for name in $SWEEPS; do
  python -m rso_jax.tools.sweep --sweep_file="configs/sweeps/demo_$name.json" \
    --sweep_dir="runs/demo/$name" "${REPORT[@]}" > /dev/null || failed="$failed $name"
done
mkdir -p docs/figures
while read -r source target; do
  if [ -f "runs/demo/$source" ]; then cp "runs/demo/$source" "docs/figures/$target"
  else echo "not drawn: runs/demo/$source" >&2; failed="$failed $target"; fi
done <<'FIGURES'
table1/plots/setting.png table1.png
table1/plots/rewards.png table1_rewards.png
table1/plots/training/rso_sample_rank_sigmoid_norm.SEED=0.png training_rso_seed0.png
table2/plots/setting.png table2.png
beta/plots/BETA.png beta.png
beta/plots/BETA.acceptance.png beta_acceptance.png
beta/plots/rewards.png beta_rewards.png
gamma/plots/GAMMA.png gamma.png
rs_dpo/plots/setting.png rs_dpo.png
rs_dpo/plots/rewards.png rs_dpo_rewards.png
iterative/plots/setting.png iterative.png
best_of_n/plots/best_of_n.png best_of_n.png
FIGURES
BETA_COLUMNS=(--metric="trained.gold_win_rate_vs_sft_target=gold win rate"
              --metric="trained.proxy_win_rate_vs_sft_target=proxy win rate"
              --metric="trained.autosxs_win_rate_vs_sft_target=AutoSxS win rate"
              --metric="select.acceptance_rate=acceptance rate")
BEST_OF_N_COLUMNS=()
for policy in sft trained; do for n in 1 2 4 8 16 32 64; do
  BEST_OF_N_COLUMNS+=(--metric="best_of_n.$policy.N=$n.gold_reward=$policy, best of $n")
done; done
for name in $SWEEPS; do
  echo "## $name"; echo
  case $name in
    beta) python scripts/results_table.py "runs/demo/$name" "${BETA_COLUMNS[@]}" ;;
    best_of_n) python scripts/results_table.py "runs/demo/$name" "${BEST_OF_N_COLUMNS[@]}" ;;
    *) python scripts/results_table.py "runs/demo/$name" ;;
  esac
  echo
done > runs/demo/tables.md
PAIRS=()
for loss in sigmoid_norm hinge hinge_norm; do
  PAIRS+=(--paired="rso_sample_rank_$loss:sft_sample_rank_$loss"
          --paired="sft_sample_rank_$loss:direct_$loss" --paired="rso_sample_rank_$loss:direct_$loss")
done
{ echo "## table1, paired by seed"; echo
  python scripts/results_table.py runs/demo/table1 "${PAIRS[@]}"; echo
  echo "## table2, paired by seed"; echo
  python scripts/results_table.py runs/demo/table2 --paired=rso_8_first_round:sft_8_first_round \
    --paired=rso_8_tournament:sft_8_tournament --paired=sft_8_tournament:sft_8_first_round \
    --paired=rso_8_tournament:rso_8_first_round --paired=sft_16_first_round:sft_8_first_round
  echo; echo "## rs_dpo, paired by seed"; echo
  python scripts/results_table.py runs/demo/rs_dpo \
    --paired=rs_dpo_eta_0.80:best_vs_worst --paired=rs_dpo_eta_0.85:best_vs_worst \
    --paired=rs_dpo_eta_0.90:best_vs_worst --paired=rs_dpo_eta_0.80:best_vs_random \
    --paired=rs_dpo_eta_0.85:best_vs_random --paired=rs_dpo_eta_0.90:best_vs_random
} >> runs/demo/tables.md
echo "Figures in docs/figures/; the tables of docs/results.md in runs/demo/tables.md (every"
echo "column: runs/demo/*/summary.md)"
if [ -n "$failed" ]; then echo "Failed:$failed" >&2; exit 1; fi
