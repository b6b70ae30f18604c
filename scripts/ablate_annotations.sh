#!/usr/bin/env bash
# Ablation (paper Table 2): accuracy gain vs the number of annotated images per class.
# For each k, the first k low-confidence images of each class (sift/low) are "annotated"
# (labelme JSON traced from the ground-truth masks, preprocessing/synthetic_labelme.py), turned
# into masks, and the classifier is treated with the spatial constraint; k = 0 is the
# fine-tune control. Reuses the experiment folder of scripts/quickstart.sh; sift/low must hold
# at least max(k) images per class (quickstart: num_low=20).
# Writes ${table_dir}/ablation_annotations.{md,png,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_args.sh "$@"   # name=value arguments; unknown names refused
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

result_path=${result_path:-output/quickstart}
model_name=${model_name:-smallcnn}
data_name=${data_name:-decoy_digits}
exp_name=${exp_name:-${model_name}_${data_name}}
data_dir=${data_dir:-data/${data_name}}
gt_mask_dir=${gt_mask_dir:-${data_dir}/masks/train}   # where the simulated annotator looks
settings=${settings:-0,5,10,20}       # annotated images per class (paper: 100..1000 of 5000)
variants=${variants:-space}           # space (paper) or all
num_epochs=${num_epochs:-4}
lr=${lr:-0.02}                        # as the quickstart
batch_size=${batch_size:-32}          # as the quickstart
alpha=${alpha:-0.078}                 # channel constraint weight (variant all)
beta=${beta:-1.0}                     # spatial constraint weight
expand_px=${expand_px:-2}             # mask expansion at 32 px (paper: 30 at 224 px)
seed=${seed:-0}
workers=${workers:-0}
device_index=${device_index:-}
exp_dir=${exp_dir:-${result_path}/${exp_name}}
table_dir=${table_dir:-results}
# launcher parallel partition gpus_per_job cpus_per_job time_min: scripts/_launch.sh
# (one job per run; gpus_per_job defaults to 0 here)

source scripts/_launch.sh
job_flags 0
"$PYTHON" -m scripts.ablation annotations \
  --exp_dir "$exp_dir" \
  --model_name "$model_name" \
  --data_name "$data_name" \
  --data_dir "$data_dir" \
  --gt_mask_dir "$gt_mask_dir" \
  --settings "$settings" \
  --variants "$variants" \
  --num_epochs "$num_epochs" \
  --lr "$lr" \
  --batch_size "$batch_size" \
  --alpha "$alpha" \
  --beta "$beta" \
  --expand_px "$expand_px" \
  --seed "$seed" \
  --workers "$workers" \
  ${device_index:+--device_index "$device_index"} \
  --out_dir "$table_dir" \
  "${job_flags[@]}" \
  ${extra_args:-}
