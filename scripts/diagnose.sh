#!/usr/bin/env bash
# Per-image diagnosis with the channel statistics: rank test images by the share of their
# gradient on channels (and, with masks, on pixels) their class does not use; overlay figures.
# Run after grad_calculate.sh. Output: ${result_path}/${exp_name}/diagnosis
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_args.sh "$@"   # name=value arguments; unknown names refused
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

result_path=${result_path:-output}
model_name=${model_name:-resnet34}
data_name=${data_name:-decoy_digits}
exp_name=${exp_name:-${model_name}_${data_name}}
in_channels=${in_channels:-}          # empty: the dataset's
num_classes=${num_classes:-}          # empty: from classes.txt
data_type=${data_type:-test}          # split to diagnose
layer=${layer:-0}                     # one of the layers in grad_path
grad_mode=${grad_mode:-}              # empty: the statistics' own
num_overlays=${num_overlays:-8}       # images per overlay figure
workers=${workers:-2}
device_index=${device_index:-}        # empty: --device auto
layout=$("$PYTHON" -m scripts.dirs "${result_path}/${exp_name}")   # folders: scripts/dirs.py
eval "$layout"
model_path=${model_path:-$exp_model_ori}
data_dir=${data_dir:-data/${data_name}}
data_path=${data_path:-${data_dir}}
mask_dir=${mask_dir:-${data_path}/masks}                    # object masks; skipped if absent
grad_path=${grad_path:-$exp_grads}
high_path=${high_path:-$exp_sift_high}  # high/low figure, if present
low_path=${low_path:-$exp_sift_low}
out_dir=${out_dir:-$exp_diagnosis}

optional=()
[ -d "$mask_dir" ] && optional+=(--mask_dir "$mask_dir")
[ -d "$high_path" ] && optional+=(--high_path "$high_path")
[ -d "$low_path" ] && optional+=(--low_path "$low_path")

"$PYTHON" core/diagnose.py \
  --model_name "$model_name" \
  --data_name "$data_name" \
  ${in_channels:+--in_channels "$in_channels"} \
  ${num_classes:+--num_classes "$num_classes"} \
  --model_path "$model_path" \
  --grad_path "$grad_path" \
  --data_path "$data_path" \
  --data_type "$data_type" \
  --layer "$layer" \
  ${grad_mode:+--grad_mode "$grad_mode"} \
  --num_overlays "$num_overlays" \
  --workers "$workers" \
  ${device_index:+--device_index "$device_index"} \
  --out_dir "$out_dir" \
  ${optional[@]+"${optional[@]}"} \
  ${extra_args:-}
