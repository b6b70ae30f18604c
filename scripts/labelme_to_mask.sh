#!/usr/bin/env bash
# labelme JSON annotations -> binary foreground masks, MASK_DIR/<class>/<stem>.png (255 = object).
# Run after scripts/annotate.sh; the masks feed train_model_doctor.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_args.sh "$@"   # name=value arguments; unknown names refused

result_path=${result_path:-output}
model_name=${model_name:-resnet34}
data_name=${data_name:-decoy_digits}
exp_name=${exp_name:-${model_name}_${data_name}}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
layout=$("$PYTHON" -m scripts.dirs "${result_path}/${exp_name}")   # folders: scripts/dirs.py
eval "$layout"
json_dir=${json_dir:-$exp_sift_low}  # labelme files, <class>/<stem>.json (beside the images by default)
mask_dir=${mask_dir:-$exp_masks}     # train_model_doctor.sh reads it
image_dir=${image_dir:-$json_dir}      # the annotated images, <class>/<stem>.<ext>, to cross-check sizes

"$PYTHON" preprocessing/labelme_to_mask.py \
    --json_dir "$json_dir" \
    --mask_dir "$mask_dir" \
    --image_dir "$image_dir"
