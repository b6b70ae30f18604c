#!/usr/bin/env bash
# Benchmarks as ratios measured in one run (treatment ÷ plain step per model, layer depth,
# J-draw diagnosis ÷ noiseless, memory vs images, loader ÷ training, in-memory vs per-image
# data path vs training, released ÷ ours)
# -> ${out_dir}/benchmark.md + benchmark.json. tiny=1: CI sizes (< 1 min on a CPU).
# Empty values take python -m scripts.benchmark's defaults (shown), or --tiny's when tiny=1.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_args.sh "$@"   # name=value arguments; unknown names refused
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

device=${device:-auto}                # auto | cpu | cuda | cuda:N
tiny=${tiny:-0}                       # 1: CI sizes
quickstart=${quickstart:-0}           # 1: also time the quickstart (minutes)
models=${models:-}                    # all | comma-separated names
batch_size=${batch_size:-}            # 32: treatment batch
reps=${reps:-}                        # 5: interleaved repetitions per ratio
diag_model=${diag_model:-}            # resnet34
diag_images=${diag_images:-}          # 1000
data_images=${data_images:-}          # 2560: images per synthetic folder (data_paths)
sections=${sections:-treatment,depth,diagnosis,memory,loader,data_paths,released}
out_dir=${out_dir:-results}

flags=()
if [ "$tiny" = 1 ]; then flags+=(--tiny); fi
if [ "$quickstart" = 1 ]; then flags+=(--quickstart); fi

"$PYTHON" -m scripts.benchmark \
  --device "$device" \
  ${models:+--models "$models"} \
  ${batch_size:+--batch_size "$batch_size"} \
  ${reps:+--reps "$reps"} \
  ${diag_model:+--diag_model "$diag_model"} \
  ${diag_images:+--diag_images "$diag_images"} \
  ${data_images:+--data_images "$data_images"} \
  --sections "$sections" \
  --out_dir "$out_dir" \
  ${flags[@]+"${flags[@]}"} \
  ${extra_args:-}
