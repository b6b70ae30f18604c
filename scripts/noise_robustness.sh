#!/usr/bin/env bash
# Discovery 2 (paper Fig. 3): predictions of normal and FGSM adversarial test images under
# uniform noise U[-delta, delta] added to one conv layer's output, 10 draws per image.
# Defaults read the model of scripts/quickstart.sh. Writes ${out_dir}/${name}.{csv,png,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_args.sh "$@"   # name=value arguments; unknown names refused
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

result_path=${result_path:-output/quickstart}
model_name=${model_name:-smallcnn}   # the quickstart's model (result_path above)
data_name=${data_name:-decoy_digits}
exp_name=${exp_name:-${model_name}_${data_name}}
in_channels=${in_channels:-}
num_classes=${num_classes:-}
data_dir=${data_dir:-data/${data_name}}
data_type=${data_type:-test}
layout=$("$PYTHON" -m scripts.dirs "${result_path}/${exp_name}")   # folders: scripts/dirs.py
eval "$layout"
model_path=${model_path:-$exp_model_ori}
num_images=${num_images:-100}         # correctly classified images (paper: 100)
eps=${eps:-8/255}                     # FGSM step in pixel units
deltas=${deltas:-0,0.05,0.1,0.2,0.3,0.5,0.8,1.0}
repeats=${repeats:-10}                # noise draws per image (paper: 10)
layer=${layer:-}                      # conv layer (0 = last); empty: chosen at random from seed
seed=${seed:-0}
device_index=${device_index:-}
out_dir=${out_dir:-results}
name=${name:-noise_robustness}

"$PYTHON" core/robustness.py \
  --model_name "$model_name" \
  --data_name "$data_name" \
  ${in_channels:+--in_channels "$in_channels"} \
  ${num_classes:+--num_classes "$num_classes"} \
  --data_dir "$data_dir" \
  --data_type "$data_type" \
  --model_path "$model_path" \
  --num_images "$num_images" \
  --eps "$eps" \
  --deltas "$deltas" \
  --repeats "$repeats" \
  ${layer:+--layer "$layer"} \
  --seed "$seed" \
  ${device_index:+--device_index "$device_index"} \
  --out_dir "$out_dir" \
  --name "$name" \
  ${extra_args:-}
