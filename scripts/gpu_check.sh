#!/usr/bin/env bash
# GPU check (scripts/gpu_check.py): the CUDA code paths of the entry points (--amp bf16/fp16,
# in-memory data on the device, torchrun with NCCL), then one Table 1 cell — shufflenetv2 on
# the full Fashion-MNIST: train -> sift high -> statistics -> sift low -> +Channel against a
# fine-tune control — into ${out_dir}/gpu_check.{json,md}; nothing is written outside out_dir.
#
#   tiny=1 out_dir=/tmp/gc bash scripts/gpu_check.sh      # CPU, generated data, ~1 min (CI)
#   bash scripts/gpu_check.sh out_dir=/tmp/gc idx_dir=DIR  # GPU: DIR holds the 4 IDX .gz files
#
# On the lent GPU machine (one H100; it receives a copy of the working tree): first, here,
#   mkdir -p data/fashion_mnist_idx && cp /usr/share/datasets/fashion-mnist/*.gz data/fashion_mnist_idx/
# (data/ is git-ignored, so it travels only when carried; 30 MB), then one call of the device
# tool with carry=["data/fashion_mnist_idx"], timeout_s=570 and the command
#   timeout 540 bash scripts/gpu_check.sh out_dir=/tmp/gc; rc=$?; cp /tmp/gc/gpu_check.json
#   /tmp/gc/gpu_check.md $OUT/; tar czf $OUT/logs.tgz -C /tmp/gc logs; exit $rc
# (out_dir outside $OUT: the 70,000 PNGs and the checkpoints must not be sent back).
# Sized for <= 8 min on one H100, estimated (not yet measured): ~70 s to convert the IDX files
# to PNG folders (~1 ms per image on one core), ~60 s for the nine 1-epoch checks (mostly
# process and CUDA start-up), then the cell, 469 steps of batch 128 per epoch at an estimated
# ~9k images/s (bf16; a small network, so kernel launches bound the step: ~7 s per plain
# epoch, ~3x that with the channel constraint's extra gradient passes): 12 epochs ~110 s,
# sifting and statistics ~45 s, control 4 epochs ~40 s, +Channel 4 epochs ~90 s.
# No step starts after budget_s (a step running grace_s past it is stopped), so the report
# always comes back; gpu_check.json holds each training run's images/s to check the estimate.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_args.sh "$@"   # name=value arguments; unknown names refused
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

tiny=${tiny:-0}                               # 1: CPU test run on generated IDX data
out_dir=${out_dir:-output/gpu_check}          # everything goes here
idx_dir=${idx_dir:-data/fashion_mnist_idx}    # the four Fashion-MNIST IDX files (.gz)
model_name=${model_name:-shufflenetv2}        # the cell's network (paper Table 1: 94.63, +0.19)
train_epochs=${train_epochs:-$([ "$tiny" = 1 ] && echo 1 || echo 12)}
doctor_epochs=${doctor_epochs:-$([ "$tiny" = 1 ] && echo 1 || echo 4)}   # control and +Channel
batch_size=${batch_size:-128}                 # released
lr=${lr:-0.01}                                # released, cosine-annealed
amp=${amp:-bf16}                              # the cell's training runs: off | bf16 | fp16
alpha=${alpha:-0.078}                         # +Channel weight; beta = 0 at 28 px (released tip)
num_high=${num_high:-$([ "$tiny" = 1 ] && echo 3 || echo 100)}   # T per class (paper)
num_low=${num_low:-$([ "$tiny" = 1 ] && echo 2 || echo 20)}      # annotation candidates per class
noise_draws=${noise_draws:-$([ "$tiny" = 1 ] && echo 2 || echo 10)}   # J (paper)
noise_delta=${noise_delta:-0.1}               # delta (paper)
check_train_per_class=${check_train_per_class:-200}   # the checks' data (1 epoch each)
check_test_per_class=${check_test_per_class:-50}
tiny_per_class=${tiny_per_class:-6}           # tiny=1: generated images per class and split
seed=${seed:-0}
budget_s=${budget_s:-$([ "$tiny" = 1 ] && echo 3600 || echo 420)}   # no step starts later than this (s)
grace_s=${grace_s:-60}                        # a step running this long past it is stopped

"$PYTHON" -m scripts.gpu_check \
  --out_dir "$out_dir" \
  --idx_dir "$idx_dir" \
  $( [ "$tiny" = 1 ] && echo --tiny ) \
  --tiny_per_class "$tiny_per_class" \
  --model_name "$model_name" \
  --train_epochs "$train_epochs" \
  --doctor_epochs "$doctor_epochs" \
  --batch_size "$batch_size" \
  --lr "$lr" \
  --amp "$amp" \
  --alpha "$alpha" \
  --num_high "$num_high" \
  --num_low "$num_low" \
  --noise_draws "$noise_draws" \
  --noise_delta "$noise_delta" \
  --check_train_per_class "$check_train_per_class" \
  --check_test_per_class "$check_test_per_class" \
  --seed "$seed" \
  --budget_s "$budget_s" \
  --grace_s "$grace_s"
