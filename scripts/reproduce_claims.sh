#!/usr/bin/env bash
# The paper's claims that this machine can test (Table 1, Fashion-MNIST column: +Channel and
# +Space against a fine-tune control), with converged models, paired confidence intervals and
# both selection rules; then the report (section "claims" of RESULTS.md, curves in
# ${figures_dir}). The benchmark skips finished runs, so rerunning resumes; the report reads
# whatever the run folders hold. Examples:
#   bash scripts/reproduce_claims.sh                       # smallcnn, 10 seeds
#   models="smallcnn vgg16" seeds=0,1,2 bash scripts/reproduce_claims.sh
#   report_only=1 bash scripts/reproduce_claims.sh         # tabulate what exists
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_args.sh "$@"   # name=value arguments; unknown names refused
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHON

claims=${claims:-"channel space"}                 # Table 1 columns measured: channel space all
models=${models:-smallcnn}                        # one setting per network
base_data=${base_data:-fashion_mnist}
seeds=${seeds:-0,1,2,3,4,5,6,7,8,9}
train_per_class=${train_per_class:-1000}
test_per_class=${test_per_class:-0}               # 0: the whole test split (fewer: cheaper)
train_epochs=${train_epochs:-30}                  # the convergence check reads these curves
doctor_epochs=${doctor_epochs:-4}                 # every fine-tune, control included
alphas=${alphas:-0.001,0.01,0.078125}             # +Channel alpha searched on val (first seed)
betas=${betas:-0.3,1,3}                           # +Space beta searched on val (first seed)
acc_tol=${acc_tol:-0.3}                           # converged: last fifth within this of best
loss_tol=${loss_tol:-0.05}                        # converged: train loss flat within this share
out_root=${out_root:-output/claims}
results_file=${results_file:-RESULTS.md}
figures_dir=${figures_dir:-results_figures}             # PNGs beside RESULTS.md (tracked)
fig3=${fig3:-1}                                    # Fig. 3 on the first network's first seed
fig3_deltas=${fig3_deltas:-0,0.05,0.1,0.2,0.3,0.5,0.8,1.0}
results_root=${results_root:-results}            # per-run tables, Fig. 3's JSON (git-ignored)
report_only=${report_only:-0}
measured_on=${measured_on:-}                      # the runs' commit when their config.json has none

short=${base_data/fashion_mnist/fmnist}
variants=control
for claim in ${claims}; do
  case "${claim}" in
    channel|space) variants="${variants},${claim}" ;;
    all) variants="${variants},all" ;;
    *) echo "reproduce_claims.sh: error: claims: unknown '${claim}' (valid: channel space all)" >&2
       exit 2 ;;
  esac
done

runs=()
for model_name in ${models}; do
  out_dir="${out_root}/${model_name}_${short}"
  runs+=("${out_dir}")
  if [ "${report_only}" != 1 ]; then
    model_name="${model_name}" base_data="${base_data}" decoy_kind=none seeds="${seeds}" \
      variants="${variants}" alphas="${alphas}" betas="${betas}" \
      train_per_class="${train_per_class}" test_per_class="${test_per_class}" \
      train_epochs="${train_epochs}" doctor_epochs="${doctor_epochs}" out_dir="${out_dir}" \
      results_dir="${results_root}/claims_${model_name}" bash scripts/shortcut_benchmark.sh
  fi
done

fig3_args=()
if [ "${fig3}" = 1 ]; then
  first_model=${models%% *}
  fig3_dir="${results_root}/claims_fig3_${first_model}"
  if [ "${report_only}" != 1 ] && [ ! -f "${fig3_dir}/noise_robustness.json" ]; then
    "${PYTHON}" -m core.robustness \
      --model_name "${first_model}" \
      --data_name "decoy_${base_data}" \
      --model_path "${runs[0]}/seed${seeds%%,*}/decoy/models/last.pth" \
      --data_dir "data/shortcut_${base_data}_none_${train_per_class}$([ "${test_per_class}" = 0 ] || echo "_test${test_per_class}")" \
      --deltas "${fig3_deltas}" \
      --out_dir "${fig3_dir}"
  fi
  if [ -f "${fig3_dir}/noise_robustness.json" ]; then
    fig3_args=(--robustness_json "${fig3_dir}/noise_robustness.json")
  fi
fi

"${PYTHON}" -m scripts.claims \
  --runs "${runs[@]}" \
  "${fig3_args[@]}" \
  --acc_tol "${acc_tol}" \
  --loss_tol "${loss_tol}" \
  --results_file "${results_file}" \
  ${measured_on:+--measured_on "${measured_on}"} \
  --figures_dir "${figures_dir}"
