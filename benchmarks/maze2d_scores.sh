#!/usr/bin/env bash
# The D4RL maze2d-v1 rows of results/<device>.md: generate the datasets, then train and evaluate each method over
# three seeds (100 episodes each). Budgets are reduced from the papers' (stated in every row); each call writes
# its own section as soon as it finishes. Usage: bash benchmarks/maze2d_scores.sh DATA_ROOT WORKDIR
set -uo pipefail
root=${1:?DATA_ROOT}; work=${2:?WORKDIR}
scores() { python3 -m diffrl.cli benchmark maze_scores --root "$root" --workdir "$work" "$@"; }
for maze in umaze large; do
  python3 -m diffrl.cli data generate "maze2d-$maze" --root "$root" --num-envs 256 --no-progress || exit 1
  scores --variant "maze2d-$maze" --methods bc --set bc train.steps=20000
  scores --variant "maze2d-$maze" --methods diffuser --set diffuser train.steps=10000
done
scores --variant maze2d-large --methods ldcq --seeds 0 --set ldcq train.vae.steps=5000 train.prior.steps=10000 \
  train.q.steps=10000 q.pool_size=100 q.num_candidates=100 q.pool_steps=20 q.pool_batch=8192
# DIAR with and without Adaptive Revaluation next to LDCQ, on the same data and budget (the DIAR issue's rows)
for maze in umaze large; do
  scores --variant "maze2d-$maze" --methods ldcq diar diar-noar --seeds 0 --set ldcq train.vae.steps=5000 \
    train.prior.steps=10000 train.q.steps=10000 q.pool_size=100 q.num_candidates=100 q.pool_steps=20 \
    q.pool_batch=8192 --set diar train.vae.steps=5000 train.prior.steps=10000 train.qv.steps=10000 q.pool_size=100 \
    q.num_candidates=100 q.pool_steps=20 q.pool_batch=8192
done
# Diffusion-QL, PlanDQ, PlanQQ, PlanQD and PlanDD on maze2d-large next to BC (the PlanDQ issue's rows)
scores --variant maze2d-large --methods dql plandq planqq planqd plandd --set dql train.steps=50000 \
  --set plandq train.conductor.steps=50000 train.performer.steps=50000 \
  --set planqq train.conductor.steps=50000 train.performer.steps=50000 \
  --set planqd train.conductor.steps=50000 train.performer.steps=50000 \
  --set plandd train.conductor.steps=50000 train.performer.steps=50000
