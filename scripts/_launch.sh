# Sourced by the pipeline scripts: `launch script.py ARGS...` runs plain python when
# nproc=1 and nnodes=1, else torchrun (DistributedDataParallel; gloo on CPU, NCCL on CUDA).
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
launch() {
  if [ "${nproc:-1}" -le 1 ] && [ "${nnodes:-1}" -le 1 ]; then
    "$PYTHON" "$@"
  else
    "$PYTHON" -m torch.distributed.run \
      --nproc_per_node "${nproc:-1}" \
      --nnodes "${nnodes:-1}" \
      --node_rank "${node_rank:-0}" \
      --master_addr "${master_addr:-127.0.0.1}" \
      --master_port "${master_port:-29500}" \
      "$@"
  fi
}

# The job-launcher flags of the grid drivers (scripts.table1, scripts.ablation). Each may be
# set in the environment; the defaults are here, once:
#   launcher=none       none (in this process) | local (submitit, here) | slurm
#   parallel=1          runs at once (local processes / Slurm array)
#   partition=          Slurm partition; empty: the cluster's default
#   gpus_per_job=$1     GPUs per run (local: handed out in turn; 0 on a CPU); the caller's default
#   cpus_per_job=       Slurm CPUs per run; empty: the cluster's default
#   time_min=2880       time limit of one run (minutes)
# Usage: `job_flags GPUS`, then `"$PYTHON" -m scripts.X ... "${job_flags[@]}"`.
job_flags() {
  launcher=${launcher:-none} parallel=${parallel:-1} partition=${partition:-}
  gpus_per_job=${gpus_per_job:-$1} cpus_per_job=${cpus_per_job:-} time_min=${time_min:-2880}
  job_flags=(--launcher "$launcher" --parallel "$parallel" --gpus_per_job "$gpus_per_job"
             --time_min "$time_min")
  if [ -n "$partition" ]; then job_flags+=(--partition "$partition"); fi
  if [ -n "$cpus_per_job" ]; then job_flags+=(--cpus_per_job "$cpus_per_job"); fi
}
