"""torchrun on CPU (gloo, 2 processes): results equal one process; only rank 0 writes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from fakedata import make_image_folder
from utils import save_weights

ROOT = Path(__file__).resolve().parents[1]


def run(args, nproc=1, cwd=ROOT):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    launcher = [sys.executable] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
         "--master_port", str(29500 + os.getpid() % 1000)]
    proc = subprocess.run(launcher + [str(a) for a in args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    data = make_image_folder(tmp / "data", num_classes=3, per_class=7)
    torch.manual_seed(0)
    save_weights(models.load_model("smallcnn", 1, 3, image_size=32), tmp / "m.pth",
                 model_name="smallcnn", num_classes=3, in_channels=1)
    return tmp, data


COMMON = ["--model_name", "smallcnn", "--data_name", "digits", "--workers", "0",
          "--no_progress", "--device", "cpu"]


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*")
                  if p.is_file() and "events.out" not in p.name)


@pytest.mark.distributed
def test_sift_and_statistics_equal_one_process(setup):
    tmp, data = setup
    for nproc in (1, 2):
        out = tmp / f"n{nproc}"
        run(["core/image_sift.py", *COMMON, "--model_path", tmp / "m.pth", "--data_path", data,
             "--mode", "low", "--num_images", "4", "--image_path", out / "low",
             "--batch_size", "5"], nproc)
        run(["core/grad_calculate.py", *COMMON, "--model_path", tmp / "m.pth",
             "--data_path", data / "train", "--grad_path", out / "grads", "--layers", "0,2",
             "--noise_delta", "0", "--batch_size", "4", "--no_figures"], nproc)
    assert (tmp / "n1" / "low" / "sift.csv").read_text() == (tmp / "n2" / "low" / "sift.csv").read_text()
    assert files_under(tmp / "n1") == files_under(tmp / "n2")
    with np.load(tmp / "n1" / "grads" / "channel_stats.npz", allow_pickle=False) as a, \
            np.load(tmp / "n2" / "grads" / "channel_stats.npz", allow_pickle=False) as b:
        for key in a.files:
            if key.startswith("layer") and "/" in key or key == "counts":
                np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-9, err_msg=key)  # float32 sum order


@pytest.mark.distributed
def test_train_under_torchrun_rank0_writes_once(setup):
    tmp, data = setup
    out = tmp / "train2"
    run(["train.py", *COMMON, "--data_dir", data, "--model_dir", out, "--num_epochs", "2",
         "--batch_size", "4"], nproc=2)
    lines = (out / "epochs.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]
    assert set(files_under(out)) == {"args.json", "epochs.jsonl", "last.pth", "model_ori.pth",
                                     "result.json"}
    result = json.loads((out / "result.json").read_text())
    assert 0 <= result["final_acc"] <= 1


@pytest.mark.distributed
def test_doctor_step_ddp_equals_one_process(tmp_path):
    run(["tests/ddp_step.py", tmp_path / "one.pt"], nproc=1)
    run(["tests/ddp_step.py", tmp_path / "two.pt"], nproc=2)
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=1e-4, atol=1e-6)
    torch.manual_seed(0)
    init = models.load_model("smallcnn", 1, 4, image_size=32).state_dict()
    assert any(not torch.allclose(one[k], init[k]) for k in one)     # the step moved weights


@pytest.mark.distributed
def test_treatment_under_torchrun(setup):
    tmp, data = setup
    run(["core/grad_calculate.py", *COMMON, "--model_path", tmp / "m.pth", "--data_path",
         data / "train", "--grad_path", tmp / "g", "--noise_draws", "2", "--no_figures"])
    out = tmp / "doctor2"
    run(["train_model_doctor.py", *COMMON, "--data_dir", data, "--ori_model_path", tmp / "m.pth",
         "--model_dir", out, "--grad_dir", tmp / "g", "--alpha", "0.1", "--beta", "0",
         "--num_epochs", "1", "--batch_size", "4"], nproc=2)
    lines = [json.loads(l) for l in (out / "epochs.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [0, 1] and lines[1]["train/channel"] > 0
    assert (out / "model_doctor.pth").is_file()
