#!/usr/bin/env bash
# Train the original classifier (paper §1). Every variable can be set from the environment:
#   model_name=vgg16 data_name=cifar10 data_dir=data/cifar10 bash scripts/train.sh
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
num_epochs=${num_epochs:-200}
batch_size=${batch_size:-}            # empty: 128 at 28/32 px, 32 at 96/224 px
lr=${lr:-0.01}
seed=${seed:-0}
workers=${workers:-2}
data_mode=${data_mode:-auto}          # memory (decode once, batch augmentation; <= 64 px) | folder | auto
device_index=${device_index:-}        # empty: --device auto
nproc=${nproc:-1}                     # processes per node; >1 runs torchrun
nnodes=${nnodes:-1}                   # multi-node: also node_rank, master_addr, master_port
layout=$("$PYTHON" -m scripts.dirs "${result_path}/${exp_name}")   # folders: scripts/dirs.py
eval "$layout"
data_dir=${data_dir:-data/${data_name}}
model_dir=${model_dir:-$exp_models}
log_dir=${log_dir:-$exp_train_runs}
resume=${resume:-1}                   # 1: continue from model_dir/last.pth if present

launch train.py \
  --model_name "$model_name" \
  --data_name "$data_name" \
  ${in_channels:+--in_channels "$in_channels"} \
  ${num_classes:+--num_classes "$num_classes"} \
  --num_epochs "$num_epochs" \
  ${batch_size:+--batch_size "$batch_size"} \
  --lr "$lr" \
  --seed "$seed" \
  --workers "$workers" \
  --data_mode "$data_mode" \
  ${device_index:+--device_index "$device_index"} \
  --data_dir "$data_dir" \
  --model_dir "$model_dir" \
  --log_dir "$log_dir" \
  $( [ "$resume" = 1 ] && echo --resume ) \
  ${extra_args:-}
