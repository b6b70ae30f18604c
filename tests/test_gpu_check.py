"""scripts/gpu_check.sh: the prepared GPU check, run here as ``tiny=1`` on the CPU."""
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from preprocessing.mnist import FILES, IMAGES_MAGIC, LABELS_MAGIC, read_idx
from scripts import gpu_check

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ["train_bf16", "train_fp16", "sift_high", "statistics", "doctor_bf16", "doctor_fp16",
          "test", "torchrun_train", "torchrun_ddp"]
CELL = ["cell_train", "cell_sift_high", "cell_statistics", "cell_sift_low", "cell_control",
        "cell_channel"]
CUDA_ONLY = {"train_fp16", "doctor_fp16"}


def tree(folder: Path, skip=(".git", ".venv", "__pycache__", ".pytest_cache")) -> dict:
    """``{relative path: (size, mtime_ns)}`` of every file under ``folder``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames:
            st = os.stat(Path(dirpath) / name)
            out[str(Path(dirpath, name).relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


def finite_numbers(obj):
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return
    if isinstance(obj, (int, float)):
        assert math.isfinite(obj), obj
    elif isinstance(obj, dict):
        for v in obj.values():
            finite_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            finite_numbers(v)


def test_idx_written_as_the_converter_reads_it(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    labels = np.array([7, 0, 9], np.uint8)
    gpu_check.write_split(tmp_path, "test", images, labels)
    images_stem, labels_stem = FILES["test"]
    raw = (tmp_path / f"{images_stem}.gz").read_bytes()
    assert raw[:2] == b"\x1f\x8b"          # gzipped, like the official files
    np.testing.assert_array_equal(read_idx(tmp_path / f"{images_stem}.gz", IMAGES_MAGIC), images)
    np.testing.assert_array_equal(read_idx(tmp_path / f"{labels_stem}.gz", LABELS_MAGIC), labels)
    with pytest.raises(ValueError, match="1-d"):
        gpu_check.write_idx(tmp_path / "x.gz", images, LABELS_MAGIC)


def test_subset_keeps_the_first_images_of_each_class_in_order(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 200).astype(np.uint8)
    images = rng.integers(0, 256, (200, 28, 28)).astype(np.uint8)
    for split in ("train", "test"):
        gpu_check.write_split(tmp_path / "src", split, images, labels)
    gpu_check.subset_idx(tmp_path / "src", tmp_path / "sub", {"train": 3, "test": 1})
    stem_images, stem_labels = FILES["train"]
    got_labels = read_idx(tmp_path / "sub" / f"{stem_labels}.gz", LABELS_MAGIC)
    keep = sorted(i for k in range(10) for i in np.flatnonzero(labels == k)[:3])
    np.testing.assert_array_equal(got_labels, labels[keep])
    np.testing.assert_array_equal(read_idx(tmp_path / "sub" / f"{stem_images}.gz", IMAGES_MAGIC),
                                  images[keep])
    assert len(read_idx(tmp_path / "sub" / f"{FILES['test'][1]}.gz", LABELS_MAGIC)) == 10


def test_tiny_images_encode_the_class(tmp_path):
    gpu_check.tiny_idx(tmp_path, {"train": 4})
    images = read_idx(tmp_path / f"{FILES['train'][0]}.gz", IMAGES_MAGIC)
    labels = read_idx(tmp_path / f"{FILES['train'][1]}.gz", LABELS_MAGIC)
    assert images.shape == (40, 28, 28) and np.bincount(labels).tolist() == [4] * 10
    for image, k in zip(images, labels):   # the bright square sits where the class says
        y, x = 2 + 12 * (k // 5), 1 + 5 * (k % 5)
        assert (image[y:y + 6, x:x + 6] == 230).all() and (image < 230).sum() == 28 * 28 - 36


def runner_for(tmp_path, **overrides):
    args = gpu_check.get_args_parser().parse_args(["--out_dir", str(tmp_path), "--tiny"])
    args.out_dir = tmp_path
    vars(args).update(overrides)
    report = gpu_check.Report(args)
    return gpu_check.Runner(args, report), report


def test_runner_records_failures_and_the_time_budget(tmp_path):
    runner, report = runner_for(tmp_path)
    assert runner.run(gpu_check.Step("ok", "check", "passes"), ["-c", "print('device cpu')"],
                      says_device=True)
    assert not runner.run(gpu_check.Step("bad", "check", "fails"),
                          ["-c", "import sys; print('boom'); sys.exit(3)"])
    assert not runner.run(gpu_check.Step("cpu", "check", "no device line"), ["-c", "pass"],
                          says_device=True)
    runner.args.budget_s = 0
    assert not runner.run(gpu_check.Step("late", "cell", "after the budget"), ["-c", "pass"])
    steps = {s["name"]: s for s in json.loads((tmp_path / "gpu_check.json").read_text())["steps"]}
    assert steps["ok"]["status"] == "pass" and steps["ok"]["seconds"] > 0
    assert steps["bad"]["status"] == "fail" and steps["bad"]["note"] == "exit 3: boom"
    assert steps["cpu"]["status"] == "fail" and "device cpu" in steps["cpu"]["note"]
    assert steps["late"]["status"] == gpu_check.SKIP_BUDGET
    assert not report.ok()
    assert "| bad | fails | fail — exit 3: boom |" in (tmp_path / "gpu_check.md").read_text()


def test_cuda_only_step_is_skipped_without_cuda(tmp_path):
    runner, report = runner_for(tmp_path, no_cuda=True)
    report.cuda = False
    assert not runner.run(gpu_check.Step("fp16", "check", "x"), ["-c", "raise SystemExit(1)"],
                          cuda_only=True)
    assert report.steps[0].status == gpu_check.SKIP_NO_CUDA and report.ok()


def stub_python(tmp_path) -> Path:
    """An interpreter that records its arguments, one per line."""
    stub = tmp_path / "python"
    stub.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path}/argv\n")
    stub.chmod(0o755)
    return stub


@pytest.mark.parametrize("form", ["arguments", "environment"])
def test_script_takes_name_value_arguments_or_the_environment(tmp_path, form):
    settings = {"tiny": "1", "out_dir": str(tmp_path / "o"), "model_name": "smallcnn"}
    env = {**os.environ, "PYTHON": str(stub_python(tmp_path))}
    argv = [f"{k}={v}" for k, v in settings.items()] if form == "arguments" else []
    if form == "environment":
        env.update(settings)
    subprocess.run(["bash", "scripts/gpu_check.sh", *argv], cwd=ROOT, env=env, check=True)
    got = (tmp_path / "argv").read_text().splitlines()
    assert got[:2] == ["-m", "scripts.gpu_check"] and got.count("--tiny") == 1
    rest = [a for a in got[2:] if a != "--tiny"]
    flags = dict(zip(rest[::2], rest[1::2]))
    assert all(f.startswith("--") for f in flags) and len(flags) == len(rest) // 2
    assert flags["--out_dir"] == settings["out_dir"] and flags["--model_name"] == "smallcnn"
    assert flags["--train_epochs"] == "1" and flags["--doctor_epochs"] == "1"


def test_script_rejects_a_bare_word(tmp_path):
    env = {**os.environ, "PYTHON": str(stub_python(tmp_path))}
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "tiny"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and not (tmp_path / "argv").exists()
    assert proc.stderr.startswith("gpu_check.sh: error: expected name=value, got 'tiny'")
    assert proc.stderr.count("\n") == 1


def test_missing_idx_files_are_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "scripts.gpu_check", "--out_dir",
                           str(tmp_path / "o"), "--idx_dir", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("gpu_check.py: error: --idx_dir")
    assert not (tmp_path / "o").exists()


@pytest.mark.e2e
def test_tiny_run_on_cpu(tmp_path):
    """Every step, pass or skipped for want of CUDA, finite numbers, nothing outside out_dir."""
    out, home, tmp = tmp_path / "out", tmp_path / "home", tmp_path / "sys_tmp"
    home.mkdir()
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MPLCONFIGDIR"}
    env.update(HOME=str(home), TMPDIR=str(tmp), OMP_NUM_THREADS="1", PYTHON=sys.executable)
    before = tree(ROOT)
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "tiny=1", f"out_dir={out}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert tree(ROOT) == before                       # nothing written in the repository,
    assert not any(home.iterdir()) and not any(tmp.iterdir())   # the home or the temp folder

    report = json.loads((out / "gpu_check.json").read_text())
    finite_numbers(report)
    cuda = torch.cuda.is_available()
    assert report["tiny"] and report["ok"] and report["cuda"] == cuda
    assert report["torch"] == torch.__version__ and report["device"]
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["data", *CHECKS, *CELL]
    for name, step in steps.items():
        if name in CUDA_ONLY and not cuda:
            assert step["status"] == gpu_check.SKIP_NO_CUDA, step
            continue
        assert step["status"] == "pass", step
        assert step["seconds"] > 0 and (out / step["log"]).is_file()
        assert (out / step["log"]).read_text().startswith(" ".join(step["command"]))
    assert "gloo" in (out / steps["torchrun_ddp"]["log"]).read_text()

    cell = report["cell"]
    assert cell["model_name"] == "shufflenetv2" and cell["train_images"] == 60
    assert cell["test_images"] == 60 and cell["paper"] == {"base": 94.63, "all": None,
                                                            "space": -3.62, "channel": 0.19}
    assert set(cell["runs"]) == {"original", "control", "channel"}
    for run in cell["runs"].values():
        assert run["epochs"] == 1 and run["best_epoch"] == 1 and run["images_per_s"] > 0
        assert 0 <= run["final_acc"] <= run["best_acc"] <= 1
        assert run["images_per_s"] == pytest.approx(60 / run["seconds"])
    runs = cell["runs"]
    assert cell["channel_minus_control_final"] == pytest.approx(
        100 * (runs["channel"]["final_acc"] - runs["control"]["final_acc"]))
    # the treatments start from the trained original and write their own runs
    assert (out / "cell" / "channel" / "models" / "last.pth").is_file()
    assert (out / "cell" / "grads" / "channel_stats.npz").is_file()

    md = (out / "gpu_check.md").read_text()
    assert report["device"] in md and all(f"| {name} |" in md for name in steps)
    assert "| channel |" in md and "+Channel minus control" in md


def test_a_step_past_the_deadline_is_stopped_with_its_children(tmp_path):
    runner, report = runner_for(tmp_path, budget_s=1.0, grace_s=2.0)   # stopped at ~3 s
    pid_file = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    t0 = time.monotonic()
    assert not runner.run(gpu_check.Step("slow", "cell", "sleeps"), ["-c", code])
    assert time.monotonic() - t0 < 30
    step = report.steps[0]
    assert step.status == "fail" and "(time budget)" in step.note
    child = int(pid_file.read_text())
    time.sleep(0.5)
    assert not alive(child)


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_cell_skips_what_a_failed_step_was_needed_for(tmp_path, monkeypatch):
    runner, report = runner_for(tmp_path)

    def fail(step, argv, cuda_only=False, says_device=False):
        step.status = "fail"
        report.add(step)
        return False
    monkeypatch.setattr(runner, "run", fail)
    for split in ("train", "test"):
        (tmp_path / "data" / split).mkdir(parents=True)
    gpu_check.cell(runner, tmp_path / "data", tmp_path / "exp")
    assert {s.name: s.status for s in report.steps} == {
        "cell_train": "fail", "cell_sift_high": "skipped (needs cell_train)",
        "cell_statistics": "skipped (needs cell_sift_high)",
        "cell_sift_low": "skipped (needs cell_train)",
        "cell_control": "skipped (needs cell_statistics)",
        "cell_channel": "skipped (needs cell_statistics)"}
    assert report.cell["runs"] == {} and not report.ok()
