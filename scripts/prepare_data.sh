#!/usr/bin/env bash
# Build a dataset under data/ in the layout the loaders read (ROOT/{train,test}/<class>/).
# The default, decoy_digits, is built offline from scikit-learn's bundled digits (the plain
# digits land in data/digits on the way). Examples:
#   data_name=cifar10 download=1 bash scripts/prepare_data.sh
#   data_name=mnin source_dir=/data/mini-imagenet data_dir=data/mnin_10 \
#     num_classes_subset=10 bash scripts/prepare_data.sh
#   data_name=decoy source_dir=data/mnist data_dir=data/decoy_mnist bash scripts/prepare_data.sh
#   data_name=fashion_mnist bash scripts/prepare_data.sh   # finds Debian's dataset-fashion-mnist files
#   data_name=decoy_fashion_mnist decoy_kind=glyph bash scripts/prepare_data.sh   # local patch
#   data_name=photo_fashion_mnist correlation=0.95 val_per_class=100 bash scripts/prepare_data.sh
#   data_name=photo_fashion_mnist96 correlation=0 bash scripts/prepare_data.sh   # STL-10 stand-in
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_args.sh "$@"   # name=value arguments; unknown names refused

data_name=${data_name:-decoy_digits}
if [ "$data_name" = mini_imagenet ]; then data_name=mnin; fi   # one name: the loaders' (data/mnin)
source_dir=${source_dir:-data/raw/${data_name}}
data_dir=${data_dir:-data/${data_name}}
download=${download:-0}
seed=${seed:-0}
num_classes_subset=${num_classes_subset:-0}   # mnin only; 0 = all classes
train_per_class=${train_per_class:-480}       # mnin only
decoy_kind=${decoy_kind:-shade}              # decoy_* only: shade | texture | glyph | spot
decoy_strength=${decoy_strength:-60}          # decoy_* texture: background texture intensity
val_per_class=${val_per_class:-0}             # decoy_*, photo_*: held-out validation images
subset_per_class=${subset_per_class:-0}       # decoy_*, photo_*: training images kept (0 = all)
correlation=${correlation:-0.95}              # photo_*: training images on their class's place (0: independent)
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

download_flag=()
if [ "${download}" = 1 ]; then download_flag=(--download); fi

"${PYTHON}" preprocessing/prepare_data.py \
  --data_name "${data_name}" \
  --source "${source_dir}" \
  --output "${data_dir}" \
  --seed "${seed}" \
  --num_classes_subset "${num_classes_subset}" \
  --train_per_class "${train_per_class}" \
  --decoy_kind "${decoy_kind}" \
  --decoy_strength "${decoy_strength}" \
  --val_per_class "${val_per_class}" \
  --subset_per_class "${subset_per_class}" \
  --correlation "${correlation}" \
  ${download_flag[@]+"${download_flag[@]}"}
