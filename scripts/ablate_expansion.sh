#!/usr/bin/env bash
# Ablation (paper Table 3): accuracy gain vs the expansion of the foreground mask (pixels)
# under the spatial constraint, with the experiment's masks (scripts/quickstart.sh: masks/).
# Paper: 0..40 px at 224 px, best at 30; here 32 px images, so 0..4 px.
# Writes ${table_dir}/ablation_expansion.{md,png,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_args.sh "$@"   # name=value arguments; unknown names refused
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

result_path=${result_path:-output/quickstart}
model_name=${model_name:-smallcnn}
data_name=${data_name:-decoy_digits}
exp_name=${exp_name:-${model_name}_${data_name}}
data_dir=${data_dir:-data/${data_name}}
settings=${settings:-0,1,2,4}         # expand_px values
variants=${variants:-space}           # space (paper) or all
num_epochs=${num_epochs:-4}
lr=${lr:-0.02}                        # as the quickstart
batch_size=${batch_size:-32}          # as the quickstart
alpha=${alpha:-0.078}                 # channel constraint weight (variant all)
beta=${beta:-1.0}                     # spatial constraint weight
seed=${seed:-0}
workers=${workers:-0}
device_index=${device_index:-}
exp_dir=${exp_dir:-${result_path}/${exp_name}}
layout=$("$PYTHON" -m scripts.dirs "$exp_dir")   # folders: scripts/dirs.py
eval "$layout"
mask_dir=${mask_dir:-$exp_masks}
table_dir=${table_dir:-results}
# launcher parallel partition gpus_per_job cpus_per_job time_min: scripts/_launch.sh
# (one job per run; gpus_per_job defaults to 0 here)

source scripts/_launch.sh
job_flags 0
"$PYTHON" -m scripts.ablation expansion \
  --exp_dir "$exp_dir" \
  --model_name "$model_name" \
  --data_name "$data_name" \
  --data_dir "$data_dir" \
  --mask_dir "$mask_dir" \
  --settings "$settings" \
  --variants "$variants" \
  --num_epochs "$num_epochs" \
  --lr "$lr" \
  --batch_size "$batch_size" \
  --alpha "$alpha" \
  --beta "$beta" \
  --seed "$seed" \
  --workers "$workers" \
  ${device_index:+--device_index "$device_index"} \
  --out_dir "$table_dir" \
  "${job_flags[@]}" \
  ${extra_args:-}
