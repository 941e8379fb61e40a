#!/usr/bin/env bash
# The GPU check, sized to end within 8 minutes on one GPU: diffrl on the GPU (the CUDA extra installed when JAX sees
# no GPU), a check that a train chunk and a plan run there, the official PyTorch Diffuser's planners beside diffrl's
# on the same GPU, then the sampler, train and env benchmarks at GPU-sized batches (the maze U-Net in float32 and in
# bfloat16), and, in what is left of the budget, MJX Hopper rows, LatentDiffuser's sampler rows (its energy-guided
# plan and support latents at N = 1, 64, 1024) and MJX Warp Hopper rows where warp-lang is installed. Each
# benchmark writes its own section of benchmarks/results/<gpu>.md; a step that runs past its time limit is reported
# and the next one starts (the rows it measured before that are in the log: each benchmark prints its rows as it
# measures them).
#
#   [GPU_CHECK_SECONDS=480] bash benchmarks/gpu_check.sh [OFFICIAL_DIFFUSER_CHECKOUT]
#
# GPU_CHECK_SECONDS (default 480, the 8 minutes) bounds the whole check: the fixed steps' limits add up to it when
# JAX already sees the GPU, and the optional steps at the end run in what the fixed ones leave of it.
# OFFICIAL_DIFFUSER_CHECKOUT: a checkout of github.com/jannerm/diffuser for the PyTorch rows (skipped without it;
# they need torch with CUDA and einops). On a machine with no network, install diffrl's dependencies that are
# missing beforehand (e.g. from wheels); this script then installs diffrl alone, without a build environment.
# With $OUT set, the log goes there as gpu_check.log and the results files are copied there after every step, so a
# run cut short keeps what it measured.
# The limits are estimates from one run on an H200 (benchmarks/results/nvidia-h200.md, 2026-12-04): compiling one
# program took 4.6-27.3 s there (train chunks the longest), and the three maze plans of the PyTorch comparison took
# about 45 s. The probe took 39 s with what a stopped attempt had compiled in the cache, and over 50 s without it.
# Programs are cached on disk, so with a checkout given the sampler step reuses the comparison's compiled plans
# (not the guided plan at batch 1, which the comparison does not run).
set -uo pipefail
cd "$(dirname "$0")/.."
official=${1:-}
started=$SECONDS
status=0
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/diffrl-jax-cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
if [ -n "${OUT:-}" ]; then
  exec > >(tee "$OUT/gpu_check.log") 2>&1
fi

save_results() {
  if [ -n "${OUT:-}" ]; then
    cp benchmarks/results/*.md "$OUT"/
  fi
}

step() {  # step SECONDS COMMAND...: run with a time limit; report a failure, remember it and go on
  local limit=$1
  shift
  echo "== [$((SECONDS - started)) s] $*"
  timeout "$limit" "$@"
  local code=$?
  if [ "$code" -ne 0 ]; then
    echo "!! exit $code (limit ${limit} s): $*"
    status=1
  fi
  save_results
  return "$code"
}

budget=${GPU_CHECK_SECONDS:-480}
case "$budget" in
  '' | *[!0-9]*) echo "GPU_CHECK_SECONDS must be a whole number of seconds, not '$budget'"; exit 2 ;;
esac
budget=$((10#$budget))  # decimal, also with leading zeros
if timeout 20 python3 -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
  step 20 python3 -m pip install -q --no-deps --no-build-isolation --retries 0 --timeout 5 -e .
else  # fails within seconds where there is no network
  step 300 python3 -m pip install -q --retries 0 --timeout 5 -e '.[cuda]'
fi

# Without a GPU the benchmarks would run on the CPU and overwrite its results file: stop here instead.
step 90 python3 - <<'EOF' || { echo "!! exit $?: not on a GPU, diffrl does not run there, or past the limit: no benchmarks"; exit 1; }
import jax
import jax.numpy as jnp

assert jax.default_backend() == "gpu", f"JAX runs on {jax.devices()}, not a GPU"
from diffrl.benchmarks.sampler import diffuser_case
from diffrl.benchmarks.train import compiled_chunk

built = compiled_chunk("diffuser:pointmaze-umaze", jax.devices()[:1], 2)
carry, metrics = built["chunk"](built["carry"], built["train_data"])
case = diffuser_case("diffuser-maze", None, None)
plans = case.draw(*case.inputs(4))
for name, array in [("train carry", jax.tree_util.tree_leaves(carry)[0]), ("plans", plans)]:
    platforms = {device.platform for device in array.devices()}
    assert platforms == {"gpu"}, f"{name} lives on {platforms}"
assert bool(jnp.all(jnp.isfinite(plans))), "a plan is not finite"
print(f"a Diffuser train chunk and a batch of plans ran on {jax.devices()[0].device_kind}")
EOF

if [ -n "$official" ]; then
  step 110 python3 -m diffrl.cli benchmark compare-pytorch --official "$official" --workloads maze-plan guided-plan \
    --batches 1 64 1024 --guided-batches 64 1024 --repeats 3
else
  echo "== no official Diffuser checkout given: the PyTorch rows are skipped"
fi
step 75 python3 -m diffrl.cli benchmark sampler --samplers diffuser-maze diffuser-guided --batches 1 64 1024 \
  --budget 30
step 30 python3 -m diffrl.cli benchmark sampler --samplers diffuser-maze --compute-dtype bfloat16 \
  --batches 1 64 1024 --budget 30
step 95 python3 -m diffrl.cli benchmark train --runs \
  "diffuser:pointmaze-umaze,train.batch_size=32,train.gradient_accumulation=1" \
  "diffuser:pointmaze-umaze,train.batch_size=256,train.gradient_accumulation=1" \
  "diffuser:pointmaze-umaze,train.batch_size=256,train.gradient_accumulation=1,compute_dtype=bfloat16"
step 40 python3 -m diffrl.cli benchmark envs --envs pointmaze-umaze --sizes 4096 65536 --budget 30

left=$((budget - (SECONDS - started)))
if [ "$left" -lt 30 ]; then
  echo "== ${left} s left of ${budget} s: no MJX Hopper rows"
else
  step "$((left < 60 ? left : 60))" python3 -m diffrl.cli benchmark envs --envs hopper --sizes 4096 65536 --budget 30
fi
# LatentDiffuser's energy-guided planner and support latents at N = 1, 64, 1024
left=$((budget - (SECONDS - started)))
if [ "$left" -lt 30 ]; then
  echo "== ${left} s left of ${budget} s: no LatentDiffuser sampler rows"
else
  step "$left" python3 -m diffrl.cli benchmark sampler --samplers latent-diffuser-plan latent-diffuser-supports \
    --batches 1 64 1024 --budget 20
fi
# MJX's Warp implementation (diffrl[warp]) on the GPU, in whatever is left
left=$((budget - (SECONDS - started)))
if ! timeout 20 python3 -c "import warp" 2>/dev/null; then
  echo "== warp-lang is not installed: no MJX Warp rows"
elif [ "$left" -lt 30 ]; then
  echo "== ${left} s left of ${budget} s: no MJX Warp rows"
else
  step "$left" python3 -m diffrl.cli benchmark envs --envs hopper --sizes 4096 65536 --budget 30 --impls warp
fi
echo "== done in $((SECONDS - started)) s; results in benchmarks/results/"
exit "$status"
