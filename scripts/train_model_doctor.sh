#!/usr/bin/env bash
# Treat a trained classifier with the channel (alpha) and spatial (beta) constraints, and
# optionally the background-kernel constraint (gamma; not in the paper, see README).
# Needs: model_ori.pth (train.sh), channel statistics (grad_calculate.sh) and, for beta > 0,
# masks of annotated images (annotate.sh + labelme_to_mask.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_args.sh "$@"   # name=value arguments; unknown names refused
source scripts/_launch.sh

result_path=${result_path:-output}
model_name=${model_name:-resnet34}
data_name=${data_name:-decoy_digits}
exp_name=${exp_name:-${model_name}_${data_name}}
in_channels=${in_channels:-}
num_classes=${num_classes:-}
num_epochs=${num_epochs:-20}
batch_size=${batch_size:-}            # empty: 128 at 28/32 px, 32 at 96/224 px
lr=${lr:-0.01}
seed=${seed:-0}
workers=${workers:-2}
data_mode=${data_mode:-auto}          # memory (decode once, batch augmentation; <= 64 px) | folder | auto
device_index=${device_index:-}
nproc=${nproc:-1}                     # processes per node; >1 runs torchrun
nnodes=${nnodes:-1}                   # multi-node: also node_rank, master_addr, master_port
variant=${variant:-doctor}            # names the output folder; a variant of scripts/variants.py
if [ "$variant" != doctor ]; then     #   also sets its weights (others 0; refuses a contradiction)
  assign=$("$PYTHON" -m scripts.variants "$variant")
  eval "$assign"
fi
alpha=${alpha:-0.078}                 # batch-mean scale: the released alpha=10 at batch 128
case "$data_name" in                  # released tip: no spatial constraint at 28/32 px
  stl10|mnin) beta=${beta:-1} ;;
  *)          beta=${beta:-0} ;;
esac
channel_layers=${channel_layers:-0}
spatial_layers=${spatial_layers:-0}
expand_px=${expand_px:-0}             # paper: 30 at 224 px
grad_mode=${grad_mode:-abs}
second_term=${second_term:-all}
noise_draws=${noise_draws:-1}
noise_delta=${noise_delta:-0}
gamma=${gamma:-0}                     # background-kernel constraint (not in the paper; needs masks)
kernel_layers=${kernel_layers:--1}    # its conv layers (-1 = the first conv)
kernel_tau=${kernel_tau:-0.5}
kernel_reinit=${kernel_reinit:-0}     # 1: re-initialise the background kernels before epoch 1
replay_annotated=${replay_annotated:-0}  # annotated images appended to every batch
init=${init:-pretrained}
layout=$("$PYTHON" -m scripts.dirs "${result_path}/${exp_name}" "$variant")   # folders: scripts/dirs.py
eval "$layout"
data_dir=${data_dir:-data/${data_name}}
ori_model_path=${ori_model_path:-$exp_model_ori}
grad_dir=${grad_dir:-$exp_grads}
mask_dir=${mask_dir:-$exp_masks}
res_model_path=${res_model_path:-$exp_treated_model}  # last.pth etc. beside it
log_dir=${log_dir:-$exp_variant_runs}
resume=${resume:-1}

launch train_model_doctor.py \
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
  --ori_model_path "$ori_model_path" \
  --res_model_path "$res_model_path" \
  --log_dir "$log_dir" \
  --grad_dir "$grad_dir" \
  --mask_dir "$mask_dir" \
  --alpha "$alpha" \
  --beta "$beta" \
  --channel_layers "$channel_layers" \
  --spatial_layers "$spatial_layers" \
  --expand_px "$expand_px" \
  --grad_mode "$grad_mode" \
  --second_term "$second_term" \
  --noise_draws "$noise_draws" \
  --noise_delta "$noise_delta" \
  --gamma "$gamma" \
  --kernel_layers="$kernel_layers" \
  --kernel_tau "$kernel_tau" \
  $( [ "$kernel_reinit" = 1 ] && echo --kernel_reinit ) \
  --replay_annotated "$replay_annotated" \
  --init "$init" \
  $( [ "$resume" = 1 ] && echo --resume ) \
  ${extra_args:-}
