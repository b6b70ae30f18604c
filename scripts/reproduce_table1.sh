#!/usr/bin/env bash
# Table 1 of the paper: 16 classifiers x 7 datasets x 3 seeds, each trained, diagnosed and
# treated (control / +Channel / +Space / +All), one submitit job per cell (launcher=local runs
# `parallel` cells at once here, launcher=slurm submits a job array); finished steps are
# skipped, so rerunning resumes and retries failed cells. Tables: ${out_dir}/table1.{md,csv}. Prepare the datasets first, e.g.
#   data_name=cifar10 download=1 bash scripts/prepare_data.sh
# Examples:
#   models="vgg16 resnet50" datasets=stl10 seeds=0 bash scripts/reproduce_table1.sh
#   launcher=slurm partition=gpu gpus_per_job=1 parallel=48 bash scripts/reproduce_table1.sh
#   launcher=local parallel=2 gpus_per_job=1 bash scripts/reproduce_table1.sh   # 2 GPUs here
#   dry_run=1 bash scripts/reproduce_table1.sh      # print the commands
#   report_only=1 bash scripts/reproduce_table1.sh  # tabulate what exists
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_args.sh "$@"   # name=value arguments; unknown names refused
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

models=${models:-alexnet vgg16 resnet50 senet34 wideresnet28 resnext50 densenet121 simplenetv1 efficientnetv2s googlenet xception mobilenetv2 inceptionv3 shufflenetv2 squeezenet mnasnet}
datasets=${datasets:-mnist fashion_mnist cifar10 cifar100 svhn stl10 mnin}
seeds=${seeds:-0 1 2}                 # paper: averages of three runs
train_epochs=${train_epochs:-200}
doctor_epochs=${doctor_epochs:-20}
num_high=${num_high:-100}             # T (paper)
num_low=${num_low:-20}                # annotated low-confidence images per class (paper)
alpha=${alpha:-0.078}                 # channel constraint (batch-mean scale; released 10 at batch 128)
beta=${beta:-1}                       # spatial constraint, +Space and +All only
expand_px=${expand_px:-}              # empty: 30 px at 224 px input, scaled to the input size
metric=${metric:-final}               # final | best | best_treated (see python -m scripts.table1 --help)
result_root=${result_root:-output/table1}
data_root=${data_root:-data}
out_dir=${out_dir:-results}
workers=${workers:-2}
device_index=${device_index:-}        # empty: the scripts' --device auto
extra_args=${extra_args:---no_progress}   # appended to every python call of the scripts
# launcher parallel partition gpus_per_job cpus_per_job time_min: scripts/_launch.sh
# (one job per cell; gpus_per_job defaults to 1 here)
dry_run=${dry_run:-0}
report_only=${report_only:-0}

flags=()
if [ -n "$expand_px" ]; then flags+=(--expand_px "$expand_px"); fi
if [ "$dry_run" = 1 ]; then flags+=(--dry_run); fi
if [ "$report_only" = 1 ]; then flags+=(--report_only); fi

source scripts/_launch.sh
job_flags 1
"$PYTHON" -m scripts.table1 \
  --models "$models" \
  --datasets "$datasets" \
  --seeds "$seeds" \
  --train_epochs "$train_epochs" \
  --doctor_epochs "$doctor_epochs" \
  --num_high "$num_high" \
  --num_low "$num_low" \
  --alpha "$alpha" \
  --beta "$beta" \
  --metric "$metric" \
  --result_root "$result_root" \
  --data_root "$data_root" \
  --out_dir "$out_dir" \
  --extra_env "workers=$workers" \
  --extra_env "device_index=$device_index" \
  --extra_env "extra_args=$extra_args" \
  "${job_flags[@]}" \
  ${flags[@]+"${flags[@]}"}
