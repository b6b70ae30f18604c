#!/usr/bin/env bash
# Shortcut benchmark (results/shortcut.md + .png; results_file=RESULTS.md also writes the table
# there, section <shortcut|gains>_<model>_<decoy_kind>): a decoy the model takes, and whether each
# treatment cures it — untreated, fine-tune control, the paper's +All, RRR with every mask,
# and ours with 20 masks per class (background kernels suppressed / re-initialised at the first
# or first two convs, with a random-kernel control; RRR on the annotated images replayed).
# Per row: random-decoy and decoy-free test, worst group (photo), share of the gap, paired
# difference to the control with its 95 % CI, whether it meets the goal (stated under the table).
# The suite, e.g. families=texture,glyph,spot,photo: this script once per family (its own
# out_dir, table in results_dir/<family>/, RESULTS.md section), then scripts/suite.py:
# results_dir/suite.md (section suite_<model>), per treatment and family the share of the gap
# and whether it meets the goal.
# Fashion-MNIST comes from data/raw/fashion_mnist or Debian's dataset-fashion-mnist.
# The paper's gains on real, decoy-free data (results/gains.md):
#   seeds=0,1,2 decoy_kind=none variants=control,channel,space,all bash scripts/shortcut_benchmark.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_args.sh "$@"   # name=value arguments; unknown names refused
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
family_out_dir() {   # a family's runs, named from the experiment
  echo "output/shortcut/${model_name}_${base_data}_$1$([ "$1" = none ] || echo "$decoy_strength")"
}

model_name=${model_name:-smallcnn}
base_data=${base_data:-fashion_mnist}
source_dir=${source_dir:-data/raw/${base_data}}
families=${families:-}                        # comma list of decoy kinds: the suite; empty: decoy_kind alone
decoy_kind=${decoy_kind:-texture}             # texture | shade (DecoyMNIST) | glyph | spot | photo | none
# each family's own setting (the other kinds ignore it)
decoy_strength=${decoy_strength:-60}          # texture: its intensity (1-255)
correlation=${correlation:-0.95}              # photo: training images on their class's place
image_size=${image_size:-64}                  # photo: 64 or 96 px (96 + correlation=0: the large-image stand-in)
train_per_class=${train_per_class:-1000}
val_per_class=${val_per_class:-100}
test_per_class=${test_per_class:-0}           # 0: the whole test split
seeds=${seeds:-0,1,2,3,4}                   # the README: 5 here, 3 for the gains
train_epochs=${train_epochs:-30}             # converged for smallcnn, 1,000/class (curve: RESULTS.md, claims)
doctor_epochs=${doctor_epochs:-4}
batch_size=${batch_size:-128}                 # training and every fine-tune
lr=${lr:-0.01}                                # training and every fine-tune (cosine-annealed)
budget=${budget:-20}                          # annotated images per class (paper: 20)
gammas=${gammas:-0.1,0.3,1,3}                     # searched on val (first seed)
rrr_lambdas=${rrr_lambdas:-0.1,0.3,1,3}      # searched on val (first seed)
rrr_budget_lambdas=${rrr_budget_lambdas:-1,3,10}  # searched on val (first seed)
replay=${replay:-32}                          # annotated images replayed per batch (rrr_budget, swap)
swap_lambdas=${swap_lambdas:-0.3,1,3}         # searched on val (first seed)
swap_partners=${swap_partners:-other}         # swap: another class's background, or any image's
alphas=${alphas:-}                            # +Channel alpha searched on val (empty: --alpha)
betas=${betas:-}                              # +Space beta searched on val (empty: --beta)
expand_px=${expand_px:-0}                     # +Space/+All: foreground expansion (px)
kernel_rule=${kernel_rule:-share}             # share | excess | rank (README: the method)
kernel_tau_excess=${kernel_tau_excess:-0.1}   # excess: margin over the background's area share
kernel_top=${kernel_top:-0.1}                 # rank: fraction of kernels flagged
kernel_layers=${kernel_layers:--1}            # -1 = the first conv
deep_kernel_layers=${deep_kernel_layers:--1,-2}  # kernels_reinit_deep: the first two convs
variants=${variants:-}                  # empty: the driver's default list; names: scripts/variants.py
out_dir=${out_dir:-$(family_out_dir "${decoy_kind}")}
results_dir=${results_dir:-results}           # with families: results_dir/<family>/ and suite.md
results_file=${results_file:-}                # RESULTS.md: also write the tables there

if [ -n "${families}" ]; then   # the suite: this script once per family, then the summary
  IFS=, read -r -a kinds <<< "${families}"
  if [ "${#kinds[@]}" -eq 0 ] || printf '%s\n' "${kinds[@]}" | grep -qx ''; then
    echo "shortcut_benchmark.sh: error: families=${families}: an empty name" >&2
    exit 2
  fi
  given_out_dir=""
  if [ "${out_dir}" != "$(family_out_dir "${decoy_kind}")" ]; then given_out_dir=${out_dir}; fi
  if [ -n "${given_out_dir}" ] && [ "${#kinds[@]}" -gt 1 ]; then
    echo "shortcut_benchmark.sh: error: out_dir=${out_dir} would hold every family's runs;" \
         "leave it unset with families=${families} (each family gets its own)" >&2
    exit 2
  fi
  inputs=()
  for kind in "${kinds[@]}"; do
    # image_size is photo's own setting: the other families keep their 64 px
    size=64; if [ "${kind}" = photo ]; then size=${image_size}; fi
    families="" decoy_kind="${kind}" out_dir="${given_out_dir:-$(family_out_dir "${kind}")}" \
      image_size="${size}" results_dir="${results_dir}/${kind}" bash scripts/shortcut_benchmark.sh
    inputs+=("${results_dir}/${kind}/shortcut.json")
  done
  "${PYTHON}" -m scripts.suite \
    --inputs "${inputs[@]}" \
    --results_dir "${results_dir}" \
    ${results_file:+--results_file "${results_file}"}
  exit 0
fi

"${PYTHON}" -m scripts.shortcut_benchmark \
  --model_name "${model_name}" \
  --base_data "${base_data}" \
  --source "${source_dir}" \
  --decoy_kind "${decoy_kind}" \
  --decoy_strength "${decoy_strength}" \
  --correlation "${correlation}" \
  --image_size "${image_size}" \
  --train_per_class "${train_per_class}" \
  --val_per_class "${val_per_class}" \
  --test_per_class "${test_per_class}" \
  --seeds "${seeds}" \
  --train_epochs "${train_epochs}" \
  --doctor_epochs "${doctor_epochs}" \
  --batch_size "${batch_size}" \
  --lr "${lr}" \
  --budget "${budget}" \
  --gammas "${gammas}" \
  --rrr_lambdas "${rrr_lambdas}" \
  --rrr_budget_lambdas "${rrr_budget_lambdas}" \
  --replay "${replay}" \
  --swap_lambdas "${swap_lambdas}" \
  --swap_partners "${swap_partners}" \
  --alphas "${alphas}" \
  --betas "${betas}" \
  --expand_px "${expand_px}" \
  --kernel_rule "${kernel_rule}" \
  --kernel_tau_excess "${kernel_tau_excess}" \
  --kernel_top "${kernel_top}" \
  --kernel_layers="${kernel_layers}" \
  --deep_kernel_layers="${deep_kernel_layers}" \
  ${variants:+--variants "$variants"} \
  --out_dir "${out_dir}" \
  --results_dir "${results_dir}" \
  ${results_file:+--results_file "${results_file}"}
