#!/usr/bin/env bash
# Evaluate a classifier: top-1/top-5, per-class accuracy, confusion matrix (+ JSON).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_args.sh "$@"   # name=value arguments; unknown names refused
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

result_path=${result_path:-output}
model_name=${model_name:-resnet34}
data_name=${data_name:-decoy_digits}
exp_name=${exp_name:-${model_name}_${data_name}}
in_channels=${in_channels:-}
num_classes=${num_classes:-}
device_index=${device_index:-}
data_dir=${data_dir:-data/${data_name}}
data_type=${data_type:-test}
layout=$("$PYTHON" -m scripts.dirs "${result_path}/${exp_name}")   # folders: scripts/dirs.py
eval "$layout"
model_path=${model_path:-$exp_model_ori}
result_file=${result_file:-$(dirname "$model_path")/test_${data_type}.json}

"$PYTHON" test.py \
  --model_name "$model_name" \
  --data_name "$data_name" \
  ${in_channels:+--in_channels "$in_channels"} \
  ${num_classes:+--num_classes "$num_classes"} \
  ${device_index:+--device_index "$device_index"} \
  --data_dir "$data_dir" \
  --data_type "$data_type" \
  --model_path "$model_path" \
  --result_path "$result_file" \
  ${extra_args:-}
