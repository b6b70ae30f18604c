"""scripts/jobs.py and the Table 1 grid through submitit's local executor: every cell its own
job, failures reported and retried on the next run."""
import argparse
import csv
import io
import json
import time
from pathlib import Path

import pytest

import flaky_job
from fakedata import make_image_folder
from scripts import jobs, table1

TESTS = Path(__file__).resolve().parent


def options(launcher="local", parallel=2, **kw) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    jobs.add_launcher_args(p)
    opts = p.parse_args(["--launcher", launcher, "--parallel", str(parallel), "--time_min", "5"])
    return argparse.Namespace(**{**vars(opts), **kw})


@pytest.fixture
def job_env(monkeypatch):
    # the jobs unpickle flaky_job.attempt by importing flaky_job from tests/
    monkeypatch.setenv("PYTHONPATH", str(TESTS))


def test_local_jobs_run_at_most_parallel_and_report_failures(tmp_path, job_env):
    logs = []
    tasks = {f"cell{k}": (tmp_path / f"cell{k}", k == 2) for k in range(3)}
    start = time.perf_counter()
    out = jobs.run_jobs(flaky_job.attempt, tasks, options(parallel=2), tmp_path / "jobs",
                        logs.append)
    assert time.perf_counter() - start < 120
    assert list(out) == ["cell0", "cell1", "cell2"]
    assert out["cell0"].ok and out["cell1"].ok and not out["cell2"].ok
    # the job's own process and the failure's message come back; its log exists
    assert out["cell0"].result["pid"] != flaky_job.os.getpid()
    assert out["cell2"].error == "RuntimeError: cell2 failed on its first attempt"
    assert out["cell2"].log.is_file() and "first attempt" in out["cell2"].log.read_text()
    assert any("cell2: FAILED: RuntimeError" in line for line in logs), logs
    # never more than 2 at once: each job records when it ran
    spans = sorted((r.result["start"], r.result["end"]) for r in out.values() if r.ok)
    spans += [tuple(json.loads((tmp_path / "cell2" / "span.json").read_text()))]
    for t, _ in spans:
        assert sum(s <= t < e for s, e in spans) <= 2

    # the next run retries the failed cell (and redoes nothing the cell function skips)
    again = jobs.run_jobs(flaky_job.attempt, {"cell2": tasks["cell2"]}, options(), tmp_path / "jobs",
                          logs.append)
    assert again["cell2"].ok and again["cell2"].result["attempts"] == 2


def test_in_process_catches_only_the_cells_failures(tmp_path):
    tasks = {"a": (tmp_path / "a", True), "b": (tmp_path / "b", False)}
    out = jobs.run_jobs(flaky_job.attempt, tasks, options("none"), tmp_path, print,
                        catch=(RuntimeError,))
    assert not out["a"].ok and out["b"].ok and out["b"].result["attempts"] == 1
    with pytest.raises(RuntimeError, match="first attempt"):
        jobs.run_jobs(flaky_job.attempt, {"c": (tmp_path / "c", True)}, options("none"), tmp_path,
                      print, catch=(KeyError,))
    with pytest.raises(ValueError, match="--parallel"):
        jobs.run_jobs(flaky_job.attempt, tasks, options("none", parallel=0), tmp_path, print)


@pytest.mark.e2e
def test_table1_grid_of_two_cells_through_the_local_executor(tmp_path, capsys):
    """Two cells at once as local submitit jobs; the one that fails is reported, the grid
    goes on, and the next run retries it while skipping every finished step."""
    data_root, root, res = tmp_path / "data", tmp_path / "out", tmp_path / "res"
    make_image_folder(data_root / "digits", num_classes=3, per_class=6, size=32, channels=1)
    argv = ["--models", "smallcnn", "--datasets", "digits", "--seeds", "0", "1",
            "--data_root", data_root, "--result_root", root, "--out_dir", res,
            "--train_epochs", "1", "--doctor_epochs", "1", "--num_high", "3", "--num_low", "2",
            "--extra_env", "workers=0", "--extra_env", "extra_args=--no_progress",
            "--extra_env", "grad_calculate.extra_args=--no_progress --allow_empty_classes "
                           "--no_figures",
            "--extra_env", "grad_calculate.noise_draws=1",
            "--launcher", "local", "--parallel", "2", "--time_min", "10"]
    cells = [table1.CellDirs(root, table1.Cell("smallcnn", "digits", s)) for s in (0, 1)]
    cells[1].root.mkdir(parents=True)
    cells[1].models.write_text("a file where train.sh needs its model folder")

    def run():
        rc = table1.main(table1.get_args_parser().parse_args([str(a) for a in argv]))
        return rc, capsys.readouterr().out

    rc, log = run()
    assert rc == 1 and "smallcnn_digits_s1: FAILED: " in log, log
    assert "StepFailed: train exited with status" in log, log
    assert "1 cell(s) failed: smallcnn_digits_s1" in log and "started local job" in log
    outputs = [cells[0].models / "model_ori.pth", cells[0].grads / "channel_stats.npz",
               *(cells[0].variant(v) / "result.json" for v in ("control", "channel"))]
    assert all(p.is_file() for p in outputs)
    assert "failed" in (res / "table1_long.csv").read_text()
    mtimes = [p.stat().st_mtime_ns for p in outputs]

    cells[1].models.unlink()   # the cause is gone: the next run retries that cell only
    rc, log = run()
    assert rc == 0, log
    assert [p.stat().st_mtime_ns for p in outputs] == mtimes   # cell 0: every step skipped
    for cell in cells:
        assert json.loads((cell.variant("channel") / "result.json").read_text())["final_acc"] >= 0
    record, = csv.DictReader(io.StringIO((res / "table1_long.csv").read_text()))
    assert record["status"] == "" and record["base_n"] == record["channel_n"] == "2"
