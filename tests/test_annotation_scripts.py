"""The annotation chain's shell defaults connect: image_sift.sh (mode=low) → annotate.sh →
labelme_to_mask.sh → train_model_doctor.sh, with only the experiment variables set."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import models
from fakedata import make_image_folder
from utils import save_weights

ROOT = Path(__file__).resolve().parents[1]


def bash(script: str, env: dict, **extra) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items()
            if k not in ("DISPLAY", "WAYLAND_DISPLAY", "image_dir", "json_dir", "mask_dir")}
    return subprocess.run(["bash", f"scripts/{script}"], cwd=ROOT, text=True, capture_output=True,
                          timeout=600, stdin=subprocess.DEVNULL, env={**full, **env, **extra})


@pytest.mark.e2e
def test_default_sift_low_annotate_masks_treatment(tmp_path):
    data = make_image_folder(tmp_path / "data", num_classes=3, per_class=4, masks=True)
    # the experiment, named as every script names it: ${result_path}/${model_name}_${data_name}
    env = {"PYTHON": sys.executable, "result_path": str(tmp_path / "out"),
           "model_name": "smallcnn", "data_name": "digits", "data_dir": str(data),
           "workers": "0", "OMP_NUM_THREADS": "1"}
    exp = tmp_path / "out" / "smallcnn_digits"
    model = models.load_model("smallcnn", 1, 3, image_size=32)
    save_weights(model, exp / "models" / "model_ori.pth", model_name="smallcnn", num_classes=3,
                 in_channels=1, data_name="digits")

    proc = bash("image_sift.sh", env, mode="low", num_images="2", extra_args="--no_progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    images = sorted((exp / "sift" / "low").glob("*/*.png"))
    assert len(images) == 6

    # annotate.sh opens the sifted folder (here: no labelme, so it explains what to run next)
    proc = bash("annotate.sh", env, LABELME=str(tmp_path / "no_labelme"))
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert f"Annotating the images in {exp / 'sift' / 'low'}" in out
    assert f"mask_dir={exp / 'masks'} bash scripts/labelme_to_mask.sh" in out

    # labelme saves <stem>.json beside each image (the traced stand-in does the same)
    proc = subprocess.run([sys.executable, "preprocessing/synthetic_labelme.py",
                           "--image_dir", str(exp / "sift" / "low"),
                           "--gt_mask_dir", str(data / "masks" / "train"),
                           "--json_dir", str(exp / "sift" / "low")],
                          cwd=ROOT, text=True, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((exp / "sift" / "low").glob("*/*.json"))) == 6

    proc = bash("labelme_to_mask.sh", env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    masks = sorted(p.relative_to(exp / "masks") for p in (exp / "masks").glob("*/*.png"))
    assert masks == [p.relative_to(exp / "sift" / "low") for p in images]

    # train_model_doctor.sh finds them by default (0 epochs: data and masks load, epoch 0 runs)
    proc = bash("train_model_doctor.sh", env, alpha="0", beta="1", num_epochs="0",
                extra_args="--no_progress")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"\b6 of 12 training images have masks", proc.stdout), proc.stdout
    assert (exp / "doctor" / "models" / "model_doctor.pth").is_file()
