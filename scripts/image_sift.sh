#!/usr/bin/env bash
# Sift training images by prediction confidence (README: Method):
#   mode=high  the most confident correct images per class -> channel statistics (grad_calculate.sh)
#   mode=low   annotation candidates per class, misclassified first -> annotate.sh
# Run after train.sh. Example: mode=low bash scripts/image_sift.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_args.sh "$@"   # name=value arguments; unknown names refused
source scripts/_launch.sh

result_path=${result_path:-output}
model_name=${model_name:-resnet34}
data_name=${data_name:-decoy_digits}
exp_name=${exp_name:-${model_name}_${data_name}}
in_channels=${in_channels:-}          # empty: the dataset's
num_classes=${num_classes:-}          # empty: from classes.txt
mode=${mode:-high}                    # high | low
num_images=${num_images:-$([ "$mode" = low ] && echo 20 || echo 50)}  # per class (paper: T=100; 20 annotated)
data_type=${data_type:-train}         # split to sift
batch_size=${batch_size:-}            # empty: the dataset's
workers=${workers:-2}
device_index=${device_index:-}        # empty: --device auto
nproc=${nproc:-1}                     # processes per node; >1 runs torchrun
nnodes=${nnodes:-1}                   # multi-node: also node_rank, master_addr, master_port
layout=$("$PYTHON" -m scripts.dirs "${result_path}/${exp_name}")   # folders: scripts/dirs.py
eval "$layout"
model_path=${model_path:-$exp_model_ori}
data_dir=${data_dir:-data/${data_name}}
data_path=${data_path:-${data_dir}}               # holds train/ and test/
case "$mode" in high) sifted=$exp_sift_high ;; *) sifted=$exp_sift_low ;; esac
image_path=${image_path:-$sifted}

launch core/image_sift.py \
  --model_name "$model_name" \
  --data_name "$data_name" \
  ${in_channels:+--in_channels "$in_channels"} \
  ${num_classes:+--num_classes "$num_classes"} \
  --model_path "$model_path" \
  --data_path "$data_path" \
  --data_type "$data_type" \
  --image_path "$image_path" \
  --mode "$mode" \
  --num_images "$num_images" \
  ${batch_size:+--batch_size "$batch_size"} \
  --workers "$workers" \
  ${device_index:+--device_index "$device_index"} \
  ${extra_args:-}
