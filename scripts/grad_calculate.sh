#!/usr/bin/env bash
# Channel statistics of the sifted high-confidence images (README: Method): per-class sums,
# normalised maps, masks M (theta) and class x kernel heat maps -> ${result_path}/${exp_name}/grads.
# Run after: mode=high bash scripts/image_sift.sh
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
layers=${layers:-0}                   # comma-separated indices from the last conv / module names, or all
theta=${theta:-0.2}                   # mask threshold
noise_draws=${noise_draws:-10}        # J (paper); 1 = released code
noise_delta=${noise_delta:-0.1}       # delta of U[-delta, delta]; 0 = released code
grad_mode=${grad_mode:-abs}           # abs (paper) | relu (released code)
seed=${seed:-0}
workers=${workers:-2}
device_index=${device_index:-}        # empty: --device auto
nproc=${nproc:-1}                     # processes per node; >1 runs torchrun
nnodes=${nnodes:-1}                   # multi-node: also node_rank, master_addr, master_port
layout=$("$PYTHON" -m scripts.dirs "${result_path}/${exp_name}")   # folders: scripts/dirs.py
eval "$layout"
model_path=${model_path:-$exp_model_ori}
data_path=${data_path:-$exp_sift_high}   # the sifted images
grad_path=${grad_path:-$exp_grads}

launch core/grad_calculate.py \
  --model_name "$model_name" \
  --data_name "$data_name" \
  ${in_channels:+--in_channels "$in_channels"} \
  ${num_classes:+--num_classes "$num_classes"} \
  --model_path "$model_path" \
  --data_path "$data_path" \
  --grad_path "$grad_path" \
  --layers "$layers" \
  --theta "$theta" \
  --noise_draws "$noise_draws" \
  --noise_delta "$noise_delta" \
  --grad_mode "$grad_mode" \
  --seed "$seed" \
  --workers "$workers" \
  ${device_index:+--device_index "$device_index"} \
  ${extra_args:-}
