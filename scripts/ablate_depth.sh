#!/usr/bin/env bash
# Ablation (paper Fig. 6): accuracy gain vs the depth of the constrained conv layer.
# Channel statistics for layers 0..L (0 = last conv), then one treatment per layer
# (--channel_layers i; variants=space/all constrain --spatial_layers i too), plus a fine-tune
# control. Reuses the experiment folder of scripts/quickstart.sh (model_ori.pth, sift/high,
# masks/). Writes ${table_dir}/ablation_depth.{md,png,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_args.sh "$@"   # name=value arguments; unknown names refused
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

result_path=${result_path:-output/quickstart}
model_name=${model_name:-smallcnn}
data_name=${data_name:-decoy_digits}
exp_name=${exp_name:-${model_name}_${data_name}}
data_dir=${data_dir:-data/${data_name}}
settings=${settings:-all}             # conv layers to constrain, 0 = last conv; all = every conv
variants=${variants:-channel}         # comma-separated of channel, space, all (paper: all three)
num_epochs=${num_epochs:-4}           # treatment epochs per run
lr=${lr:-0.02}                        # as the quickstart
batch_size=${batch_size:-32}          # as the quickstart
alpha=${alpha:-0.078}                 # channel constraint weight
beta=${beta:-1.0}                     # spatial constraint weight (variants space/all)
expand_px=${expand_px:-2}             # mask expansion (variants space/all)
noise_draws=${noise_draws:-10}        # J of the statistics
noise_delta=${noise_delta:-0.1}       # delta of the statistics
seed=${seed:-0}
workers=${workers:-0}
device_index=${device_index:-}
exp_dir=${exp_dir:-${result_path}/${exp_name}}
table_dir=${table_dir:-results}
# launcher parallel partition gpus_per_job cpus_per_job time_min: scripts/_launch.sh
# (one job per run; gpus_per_job defaults to 0 here)

source scripts/_launch.sh
job_flags 0
"$PYTHON" -m scripts.ablation depth \
  --exp_dir "$exp_dir" \
  --model_name "$model_name" \
  --data_name "$data_name" \
  --data_dir "$data_dir" \
  --settings "$settings" \
  --variants "$variants" \
  --num_epochs "$num_epochs" \
  --lr "$lr" \
  --batch_size "$batch_size" \
  --alpha "$alpha" \
  --beta "$beta" \
  --expand_px "$expand_px" \
  --noise_draws "$noise_draws" \
  --noise_delta "$noise_delta" \
  --seed "$seed" \
  --workers "$workers" \
  ${device_index:+--device_index "$device_index"} \
  --out_dir "$table_dir" \
  "${job_flags[@]}" \
  ${extra_args:-}
