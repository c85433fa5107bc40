#!/bin/bash
# The GPU checks and benchmarks in one run (at most about 10 minutes), for a lent GPU
# machine that has torch but not this project's other packages:
#
#   scripts/gpu_checks.sh OUT_DIR [WHEEL_DIR]
#
# WHEEL_DIR (optional): wheels installed with --no-deps into /tmp/site first (gymnasium,
# stable-baselines3, mujoco-core, pygame-ce, psycopg...), for a machine without a registry.
# Each step has its own time limit and the script goes on past a failing one, so that one
# broken step does not cost the others; every step's output lands in OUT_DIR, and after
# each step all of OUT_DIR is archived in OUT_DIR.tar.
set -u
out=${1:?usage: scripts/gpu_checks.sh OUT_DIR [WHEEL_DIR]}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ -n "${2:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$2"/*.whl || { echo "wheel install failed"; exit 2; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$root:$root/envs${PYTHONPATH:+:$PYTHONPATH}"
export MUJOCO_GL=egl SDL_VIDEODRIVER=dummy PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS CMD...: run CMD under a time limit, output to OUT/NAME.log
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "$name rc=$? $((SECONDS - t0))s" | tee -a "$out/steps.txt"
  # Everything so far in one file too, for a machine that returns only a few files.
  tar -cf "$out.tar" -C "$(dirname "$out")" "$(basename "$out")"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  nproc; } > "$out/machine.txt" 2>&1
step import 30 python3 -c "import rlhf.cli, rlhf_envs, stable_baselines3, gymnasium, mujoco"
step test_gpu 180 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py
b="python3 scripts/benchmark.py"
step ceiling 40 $b ceiling --device cuda --json "$out/ceiling.json"
step reward 60 $b reward --device cuda --batch 1024 --members 10 --obs 376 --hidden 256 \
  --json "$out/reward.json"
step relabel_cuda 60 $b relabel --device cuda --members 3 --hidden 256 --layers 3 \
  --sizes 100000 1000000 --json "$out/relabel_cuda.json"
step relabel_cpu 90 $b relabel --device cpu --members 3 --hidden 256 --layers 3 \
  --sizes 100000 1000000 --json "$out/relabel_cpu.json"
step options 60 $b options --device cuda --members 3 --hidden 256 --json "$out/options.json"
step overhead 120 $b overhead --device cuda --steps 8192 --repeats 3 --json "$out/overhead.json"
