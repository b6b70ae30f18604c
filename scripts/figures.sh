#!/usr/bin/env bash
# Paper Fig. 4 (per-class accuracy and gain of the treated models) and Fig. 5 (gradient maps of
# the original, +Space and +Channel models beside Grad-CAM) for an experiment folder laid out
# by scripts/quickstart.sh: models/model_ori.pth and <variant>/models/<checkpoint>.
# Tests each model first (scripts/test.sh). Writes ${out_dir}/fig4_per_class.png, fig5_visual.png.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_args.sh "$@"   # name=value arguments; unknown names refused
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

result_path=${result_path:-output/quickstart}
model_name=${model_name:-smallcnn}   # the quickstart's model (result_path above)
data_name=${data_name:-decoy_digits}
exp_name=${exp_name:-${model_name}_${data_name}}
data_dir=${data_dir:-data/${data_name}}
data_type=${data_type:-test}
variants=${variants:-channel space all}   # treated models for Fig. 4 (folder names)
checkpoint=${checkpoint:-model_doctor.pth} # best epoch; last.pth for the final one
num_images=${num_images:-6}               # Fig. 5 rows
layer=${layer:-0}                         # conv layer of the maps (0 = last)
device_index=${device_index:-}
exp_dir=${exp_dir:-${result_path}/${exp_name}}
out_dir=${out_dir:-results}
layout=$("$PYTHON" -m scripts.dirs "$exp_dir")   # folders: scripts/dirs.py
eval "$layout"
variant_layout() { layout=$("$PYTHON" -m scripts.dirs "$exp_dir" "$1") && eval "$layout"; }
run_test() {  # model_path result_file
  model_name=$model_name data_name=$data_name data_dir=$data_dir data_type=$data_type \
    device_index=$device_index model_path=$1 result_file=$2 \
    extra_args="--workers 0 --no_progress" bash scripts/test.sh >/dev/null
}

ori_json=$exp_models/test_${data_type}.json
run_test "$exp_model_ori" "$ori_json"
treated=() labels=()
for v in $variants; do
  variant_layout "$v"
  json=$exp_variant_models/test_${data_type}_${checkpoint%.pth}.json
  run_test "$exp_variant_models/$checkpoint" "$json"
  treated+=("$json") labels+=("$exp_variant_label")
done

"$PYTHON" -m scripts.figures per_class \
  --original_json "$ori_json" \
  --treated_json "${treated[@]}" \
  --treated_labels "${labels[@]}" \
  --title "$model_name on $data_name ($data_type)" \
  --out "$out_dir/fig4_per_class.png"

models=()
for v in space channel all; do
  variant_layout "$v"
  if [ -f "$exp_variant_models/$checkpoint" ]; then
    models+=("--${v}_model_path" "$exp_variant_models/$checkpoint")
  fi
done
"$PYTHON" -m scripts.figures visual \
  --model_name "$model_name" \
  --data_name "$data_name" \
  --data_dir "$data_dir" \
  --data_type "$data_type" \
  --original_model_path "$exp_model_ori" \
  ${models[@]+"${models[@]}"} \
  --num_images "$num_images" \
  --layer "$layer" \
  ${device_index:+--device_index "$device_index"} \
  --out "$out_dir/fig5_visual.png" \
  ${extra_args:-}
