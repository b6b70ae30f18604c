"""The five entry points run with exactly the flags of the authors' released shell scripts
(jiaconghu/model_doctor, scripts/*.sh), and each output lands where the released script puts it.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import test as test_script
import train
import train_model_doctor
from core import grad_calculate, image_sift

ROOT = Path(__file__).resolve().parents[1]

# The flags each released script passes (released scripts/*.sh, in their order).
RELEASED_FLAGS = {
    "train.py": ("model_name", "data_name", "in_channels", "num_classes", "num_epochs",
                 "model_dir", "data_dir", "log_dir", "device_index"),
    "test.py": ("model_name", "data_name", "in_channels", "num_classes", "model_path",
                "data_path", "device_index"),
    "core/image_sift.py": ("model_name", "data_name", "in_channels", "num_classes",
                           "model_path", "data_path", "image_path", "num_images",
                           "device_index"),
    "core/grad_calculate.py": ("model_name", "data_name", "in_channels", "num_classes",
                               "model_path", "data_path", "grad_path", "theta", "device_index"),
    "train_model_doctor.py": ("model_name", "data_name", "in_channels", "num_classes",
                              "num_epochs", "ori_model_path", "res_model_path", "data_dir",
                              "log_dir", "mask_dir", "grad_dir", "alpha", "beta",
                              "device_index"),
}
MODULES = {"train.py": train, "test.py": test_script, "core/image_sift.py": image_sift,
           "core/grad_calculate.py": grad_calculate, "train_model_doctor.py": train_model_doctor}


@pytest.mark.parametrize("script", sorted(RELEASED_FLAGS))
def test_parsers_know_every_released_flag(script):
    known = {s for a in MODULES[script].get_args_parser()._actions for s in a.option_strings}
    assert {f"--{f}" for f in RELEASED_FLAGS[script]} <= known


def make_two_class_folder(root: Path, per_class: int = 20, size: int = 32) -> Path:
    """``root/{train,test}/{dark,bright}/*.png``: classes a small network separates within a
    few steps (whole-image brightness), so the released chain has images in every class."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for k, name in enumerate(("dark", "bright")):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                img = rng.integers(0, 60, (size, size), dtype=np.uint8) + np.uint8(160 * k)
                Image.fromarray(img).save(root / split / name / f"img{i}.png")
    return root


def run_released(script: str, flags: dict) -> subprocess.CompletedProcess:
    """``python <script> --flag value ...`` from the repository root, as the released
    ``scripts/*.sh`` call it; only released flags are allowed."""
    assert tuple(flags) == RELEASED_FLAGS[script]
    argv = [sys.executable, script]
    for name, value in flags.items():
        argv += [f"--{name}", str(value)]
    proc = subprocess.run(argv, cwd=ROOT, text=True, capture_output=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, f"{script}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.e2e
def test_released_scripts_chain(tmp_path):
    data = make_two_class_folder(tmp_path / "datasets" / "two")
    result_path = f"{tmp_path / 'output'}/"          # released: a trailing slash
    exp_name = "smallcnn_two_202206072149"
    exp = Path(result_path) / exp_name
    model = {"model_name": "smallcnn", "data_name": "digits", "in_channels": 1, "num_classes": 2}
    model_ori = f"{result_path}{exp_name}/models/model_ori.pth"

    # scripts/train.sh
    run_released("train.py", {**model, "num_epochs": 10,
                              "model_dir": f"{result_path}{exp_name}/models", "data_dir": data,
                              "log_dir": f"{result_path}/runs/{exp_name}", "device_index": "0"})
    assert (exp / "models" / "model_ori.pth").is_file()
    assert list((Path(result_path) / "runs" / exp_name).glob("events.out.tfevents.*"))

    # scripts/test.sh: --data_path is the split folder itself
    proc = run_released("test.py", {**model, "model_path": model_ori,
                                    "data_path": data / "test", "device_index": "0"})
    assert "top-1" in proc.stdout and "per-class accuracy" in proc.stdout
    assert (exp / "models" / "test_test.json").is_file()

    # scripts/image_sift.sh: the high-confidence training images
    run_released("core/image_sift.py", {**model, "model_path": model_ori,
                                        "data_path": data / "train",
                                        "image_path": f"{result_path}{exp_name}/images_50",
                                        "num_images": 50, "device_index": "0"})
    for name in ("dark", "bright"):
        chosen = list((exp / "images_50" / name).glob("*.png"))
        assert 0 < len(chosen) <= 20
        assert all((data / "train" / name / p.name).read_bytes() == p.read_bytes() for p in chosen)

    # scripts/grad_calculate.sh: the masks in channel_stats.npz, layer0 being the last conv
    run_released("core/grad_calculate.py", {**model, "model_path": model_ori,
                                            "data_path": f"{result_path}{exp_name}/images_50",
                                            "grad_path": f"{result_path}{exp_name}/grads_50",
                                            "theta": 0.2, "device_index": "0"})
    with np.load(exp / "grads_50" / "channel_stats.npz", allow_pickle=False) as z:
        mask = z["layer0/mask"]
    assert mask.shape == (2, 128) and set(np.unique(mask)) <= {0.0, 1.0} and mask.sum() > 0

    # scripts/train_model_doctor.sh: --res_model_path is the treated model FILE, beside
    # model_ori.pth, which stays as it was
    ori_bytes = (exp / "models" / "model_ori.pth").read_bytes()
    run_released("train_model_doctor.py", {
        **model, "num_epochs": 1, "ori_model_path": model_ori,
        "res_model_path": f"{result_path}{exp_name}/models/model_optim.pth", "data_dir": data,
        "log_dir": f"{result_path}/runs/{exp_name}", "mask_dir": f"{result_path}{exp_name}/masks",
        "grad_dir": f"{result_path}{exp_name}/grads_50", "alpha": 10.0, "beta": 0.0,
        "device_index": "0"})
    treated = exp / "models" / "model_optim.pth"
    assert treated.is_file() and not (exp / "models" / "model_doctor.pth").exists()
    assert (exp / "models" / "model_ori.pth").read_bytes() == ori_bytes
    state = torch.load(treated, map_location="cpu", weights_only=True)
    assert state["model_name"] == "smallcnn" and state["num_classes"] == 2
    assert (exp / "models" / "last.pth").is_file() and (exp / "models" / "result.json").is_file()
