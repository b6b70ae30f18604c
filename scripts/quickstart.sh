#!/usr/bin/env bash
# The whole Model Doctor pipeline, offline, on the embedded decoy-digits dataset (texture decoy):
#   prepare data -> train -> sift high -> channel statistics + heat map -> sift low ->
#   per-image diagnosis -> annotate (simulated: labelme JSON traced from ground-truth masks) -> masks ->
#   treat (control / +Channel / +Space / +All / +Kernels) -> test each -> one table.
# fast=1 runs the same code path with fewer epochs (CI).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_args.sh "$@"   # name=value arguments; unknown names refused
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHON

fast=${fast:-0}
export result_path=${result_path:-output/quickstart}
export model_name=${model_name:-smallcnn}
export data_name=${data_name:-decoy_digits}
export exp_name=${exp_name:-${model_name}_${data_name}}
decoy_kind=${decoy_kind:-texture}            # texture: a shortcut the network takes
export data_dir=${data_dir:-data/${data_name}_${decoy_kind}}
clean_data_dir=${clean_data_dir:-$(dirname "$data_dir")/digits}   # decoy-free images
export seed=${seed:-0}
export workers=${workers:-0}                  # tiny images: decoding in-process is fastest
export device_index=${device_index:-}
train_epochs=${train_epochs:-$([ "$fast" = 1 ] && echo 2 || echo 8)}
doctor_epochs=${doctor_epochs:-$([ "$fast" = 1 ] && echo 1 || echo 3)}
export batch_size=${batch_size:-32}           # 1,437 training images: more steps per epoch
lr=${lr:-0.02}
num_high=${num_high:-50}                      # T images per class for the statistics
num_low=${num_low:-20}                        # annotated images per class (paper: 20)
noise_draws=${noise_draws:-10}                # J (paper)
noise_delta=${noise_delta:-0.1}               # delta
alpha=${alpha:-0.078}                         # channel constraint weight
beta=${beta:-1.0}                             # spatial constraint weight
gamma=${gamma:-0.3}                           # background-kernel weight (chosen on the shortcut benchmark's val split)
kernel_layers=${kernel_layers:--1,-2}         # +Kernels: the first two convs, their background
kernel_reinit=${kernel_reinit:-1}             #   kernels re-initialised (shortcut benchmark, README)
expand_px=${expand_px:-2}                     # mask expansion at 32 px
table_dir=${table_dir:-results}
results_file=${results_file:-}               # RESULTS.md: also write the table there (section quickstart)
threads=${threads:-1}                         # fixed thread count + deterministic kernels: the same
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads   # table on every run of one machine
layout=$("$PYTHON" -m scripts.dirs "${result_path}/${exp_name}")   # folders: scripts/dirs.py
eval "$layout"
common="--no_progress"
start=$(date +%s)
step() { printf '\n== %s (%ss) ==\n' "$1" "$(( $(date +%s) - start ))"; }

step "1/9 prepare the decoy-digits dataset"
data_name=$data_name data_dir=$data_dir decoy_kind=$decoy_kind bash scripts/prepare_data.sh

step "2/9 train the original classifier"
num_epochs=$train_epochs lr=$lr extra_args="$common --deterministic" bash scripts/train.sh

step "3/9 sift high-confidence training images"
mode=high num_images=$num_high extra_args=$common bash scripts/image_sift.sh

step "4/9 channel statistics (J=$noise_draws, delta=$noise_delta) + heat map"
noise_draws=$noise_draws noise_delta=$noise_delta \
  extra_args="$common --allow_empty_classes --batch_size 128" bash scripts/grad_calculate.sh

step "5/9 sift low-confidence training images (annotation candidates)"
mode=low num_images=$num_low extra_args=$common bash scripts/image_sift.sh

step "5b/9 per-image diagnosis of the test set (overlays; Fig. 2b from sift/high and sift/low)"
mask_dir=$data_dir/masks/test extra_args=$common bash scripts/diagnose.sh

step "6/9 annotate: labelme JSON traced from the ground-truth object masks"
"$PYTHON" preprocessing/synthetic_labelme.py \
  --image_dir "$exp_sift_low" \
  --gt_mask_dir "$data_dir/masks/train" \
  --json_dir "$exp_labelme" \
  --per_class "$num_low"

step "7/9 labelme JSON -> masks"
json_dir=$exp_labelme image_dir=$exp_sift_low mask_dir=$exp_masks \
  bash scripts/labelme_to_mask.sh

step "8/9 treat: control, +Channel, +Space, +All, +Kernels"
treat() {  # variant alpha beta gamma
  variant=$1 alpha=$2 beta=$3 gamma=$4 num_epochs=$doctor_epochs lr=$lr expand_px=$expand_px \
    extra_args="$common --deterministic" bash scripts/train_model_doctor.sh
}
treat control 0 0 0
treat channel "$alpha" 0 0
treat space 0 "$beta" 0
treat all "$alpha" "$beta" 0
kernel_layers=$kernel_layers kernel_reinit=$kernel_reinit treat kernels_reinit_deep 0 0 "$gamma"

step "9/9 test every model (best and final epoch) and tabulate"
"$PYTHON" -m scripts.quickstart_table \
  --exp_dir "$exp_dir" \
  --model_name "$model_name" \
  --data_name "$data_name" \
  --clean_data_dir "$clean_data_dir" \
  --decoy_data_dir "$data_dir" \
  --out_dir "$table_dir" \
  --seconds "$(( $(date +%s) - start ))" \
  ${results_file:+--results_file "$results_file"} \
  --command "bash scripts/quickstart.sh seed=$seed threads=$threads train_epochs=$train_epochs doctor_epochs=$doctor_epochs results_file=RESULTS.md"
