"""One job per grid cell, through submitit: in this process (``--launcher none``), as local
processes (``local``: ``--parallel`` cells at once on this machine) or on a Slurm cluster
(``slurm``: one job array, ``--parallel`` cells running at once).

A cell that fails (its function raises, or its job is killed or times out) is reported and
the others go on; its outputs stay where they are, so the next run of the grid skips its
finished steps and retries the rest. Job logs: ``JOB_DIR/<job id>_0_log.{out,err}``.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
LAUNCHERS = ("none", "local", "slurm")
POLL_S = 1.0   # how often the local launcher looks for finished jobs


def add_launcher_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("launcher: one job per cell (submitit)")
    g.add_argument("--launcher", default="none", choices=LAUNCHERS,
                   help="none: cells one after another in this process; local: submitit's "
                        "local executor; slurm: a Slurm job array")
    g.add_argument("--parallel", type=int, default=1,
                   help="cells running at once (local: processes; slurm: array parallelism)")
    g.add_argument("--partition", default=None, help="Slurm partition (default: the cluster's)")
    g.add_argument("--gpus_per_job", type=int, default=0,
                   help="GPUs of one cell (local: GPUs handed out to the running cells in turn)")
    g.add_argument("--cpus_per_job", type=int, default=None, help="CPUs of one cell (Slurm)")
    g.add_argument("--mem_gb", type=float, default=None, help="memory of one cell (Slurm)")
    g.add_argument("--time_min", type=int, default=2880,
                   help="time limit of one cell in minutes (the job is killed after it)")
    g.add_argument("--job_dir", type=Path, default=None,
                   help="submitit's job files and logs (default: the driver's result folder/jobs)")


@dataclass
class Outcome:
    """What became of one cell: its function's return value, or why it failed."""
    result: Any = None
    error: str | None = None
    log: Path | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def run_jobs(fn: Callable, tasks: dict[str, tuple], opts: argparse.Namespace, job_dir: Path,
             log: Callable[[str], None], catch: tuple[type[BaseException], ...] = (Exception,)
             ) -> dict[str, Outcome]:
    """``fn(*tasks[name])`` for every name, one job each; ``{name: Outcome}`` in task order.

    ``fn`` must be a module-level function of an importable module (submitit pickles it by
    reference). With ``launcher none`` only the exceptions in ``catch`` count as a failed
    cell; any other one propagates, as a bug should."""
    if opts.parallel < 1:
        raise ValueError(f"--parallel must be >= 1, got {opts.parallel}")
    if opts.launcher == "none" or not tasks:
        return {name: _in_process(fn, args, catch, name, log) for name, args in tasks.items()}
    if opts.launcher not in LAUNCHERS:
        raise ValueError(f"unknown launcher {opts.launcher!r}; valid: {', '.join(LAUNCHERS)}")
    import submitit

    # the job process unpickles fn by importing its module: it needs the repository root
    paths = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    folder = Path(job_dir) / "%j"
    if opts.launcher == "slurm":
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(
            name=fn.__name__, timeout_min=opts.time_min, gpus_per_node=opts.gpus_per_job,
            cpus_per_task=opts.cpus_per_job, mem_gb=opts.mem_gb, slurm_partition=opts.partition,
            slurm_array_parallelism=opts.parallel)
        with executor.batch():   # one array; Slurm keeps `parallel` of it running
            jobs = {name: executor.submit(fn, *args) for name, args in tasks.items()}
        for name, job in jobs.items():
            log(f"{name}: submitted Slurm job {job.job_id}")
        return {name: _collect(job, name, log) for name, job in jobs.items()}
    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=opts.time_min)
    return _local(executor, fn, tasks, opts, log)


def _in_process(fn, args, catch, name, log) -> Outcome:
    try:
        return Outcome(result=fn(*args))
    except catch as e:
        log(f"{name}: FAILED: {e}")
        return Outcome(error=str(e))


def _local(executor, fn, tasks: dict[str, tuple], opts, log) -> dict[str, Outcome]:
    """At most ``opts.parallel`` jobs at once; slot ``i`` gets its own GPUs if there are any."""
    import torch
    gpus = torch.cuda.device_count() if opts.gpus_per_job else 0
    pending, running, free = list(tasks.items()), {}, list(range(opts.parallel))
    outcomes: dict[str, Outcome] = {}
    while pending or running:
        while pending and free:
            slot = free.pop(0)
            name, args = pending.pop(0)
            visible = tuple((slot * opts.gpus_per_job + k) % gpus
                            for k in range(opts.gpus_per_job)) if gpus else ()
            executor.update_parameters(gpus_per_node=len(visible), visible_gpus=visible)
            job = executor.submit(fn, *args)
            log(f"{name}: started local job {job.job_id}"
                + (f" on GPU {','.join(map(str, visible))}" if visible else "")
                + f" (log: {job.paths.stdout})")
            running[name] = (job, slot)
        done = [name for name, (job, _) in running.items() if job.done()]
        for name in done:
            job, slot = running.pop(name)
            free.append(slot)
            outcomes[name] = _collect(job, name, log)
        if not done:
            time.sleep(POLL_S)
    return {name: outcomes[name] for name in tasks}


def _collect(job, name: str, log) -> Outcome:
    """The job's return value (waits for it), or its failure in one line."""
    try:
        return Outcome(result=job.result(), log=job.paths.stdout)
    except Exception as e:  # noqa: BLE001 - any failure of the job is the cell's failure
        reason = _last_line(str(e)) or type(e).__name__
        log(f"{name}: FAILED: {reason} (logs: {job.paths.stderr})")
        return Outcome(error=reason, log=job.paths.stderr)


def _last_line(text: str) -> str:
    """The exception line of the job's traceback (submitit puts it between two lines of
    dashes, followed by where the logs are)."""
    lines = text.splitlines()
    rules = [i for i, ln in enumerate(lines) if len(ln) > 3 and set(ln.strip()) == {"-"}]
    if len(rules) >= 2:
        lines = lines[rules[0] + 1:rules[1]]
    lines = [ln.strip() for ln in lines if ln.strip() and not ln.startswith(" ")]
    return lines[-1] if lines else ""


def describe(opts: argparse.Namespace) -> str:
    if opts.launcher == "none":
        return "in this process, one cell after another"
    where = "Slurm" + (f" partition {opts.partition}" if opts.partition else "") \
        if opts.launcher == "slurm" else "local processes"
    return (f"{where}, {opts.parallel} at once, {opts.gpus_per_job} GPU(s) per cell, "
            f"{opts.time_min} min limit")

