"""Image sifting (README: Method): selection rules against brute force, short classes, the CLI."""
import csv
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import loaders
import models
from core import image_sift
from core.image_sift import select_high, select_low, sift
from utils import save_weights

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["zeta", "alpha", "mid"]      # not sorted: label order must come from classes.txt
MODEL = "squeezenet"                    # the fastest registered model on a CPU


def make_image_folder(root: Path, splits=("train",), per_class=6, size=32, seed=0) -> Path:
    """``root/<split>/<class>/img<i>.png`` grayscale images plus ``root/classes.txt``."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size)) // (label + 1)
                Image.fromarray(pixels.astype(np.uint8), "L").save(folder / f"img{i}.png")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def make_checkpoint(path: Path, seed=0) -> Path:
    torch.manual_seed(seed)
    model = models.load_model(MODEL, 1, len(CLASSES), image_size=32)
    save_weights(model, path, model_name=MODEL, num_classes=len(CLASSES), in_channels=1)
    return path


# -- selection rules ----------------------------------------------------------------------------
def brute_high(labels, preds, conf, num_classes, count):
    out = []
    for c in range(num_classes):
        pool = [i for i in range(len(labels)) if labels[i] == c and preds[i] == c]
        out.append(sorted(pool, key=lambda i: (-conf[i], i))[:count])
    return out


def brute_low(labels, preds, conf, num_classes, count):
    out = []
    for c in range(num_classes):
        wrong = [i for i in range(len(labels)) if labels[i] == c and preds[i] != c]
        right = [i for i in range(len(labels)) if labels[i] == c and preds[i] == c]
        out.append((sorted(wrong, key=lambda i: (-conf[i], i))
                    + sorted(right, key=lambda i: (conf[i], i)))[:count])
    return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("count", [1, 3, 50])
def test_selection_matches_brute_force(seed, count):
    rng = np.random.default_rng(seed)
    n, num_classes = 200, 4
    labels = rng.integers(0, num_classes, n)
    preds = np.where(rng.random(n) < 0.7, labels, rng.integers(0, num_classes, n))
    conf = rng.choice([0.3, 0.5, 0.5, 0.9, 0.99], n)     # many ties: order by index
    for fast, slow in ((select_high, brute_high), (select_low, brute_low)):
        got = fast(labels, preds, conf, num_classes, count)
        assert [list(g) for g in got] == slow(labels, preds, conf, num_classes, count)


def test_select_low_order_by_hand():
    #            0    1    2    3    4    5    6
    labels = [0, 0, 0, 0, 0, 1, 0]
    preds = [0, 1, 0, 2, 0, 1, 1]
    conf = [0.9, 0.6, 0.4, 0.8, 0.4, 0.9, 0.7]
    low = select_low(labels, preds, conf, 2, 10)
    # wrong: 3 (0.8), 6 (0.7), 1 (0.6); then right: 2 (0.4), 4 (0.4, tie -> index), 0 (0.9)
    assert list(low[0]) == [3, 6, 1, 2, 4, 0]
    assert list(low[1]) == [5]
    assert list(select_low(labels, preds, conf, 2, 4)[0]) == [3, 6, 1, 2]
    high = select_high(labels, preds, conf, 2, 2)
    assert list(high[0]) == [0, 2] and list(high[1]) == [5]


class FixedPrediction(nn.Module):
    """Predicts class 0 for every image, confidence growing with the image's mean."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x):
        score = x.mean(dim=(1, 2, 3))
        logits = torch.zeros(len(x), self.num_classes)
        logits[:, 0] = 5 + score
        return logits


def test_short_class_is_kept_with_a_warning(tmp_path):
    root = make_image_folder(tmp_path / "data")
    dataset = loaders.build_dataset("decoy_digits", root, "train", 1, train_transform=False)
    with pytest.warns(UserWarning, match=r"'alpha' \(label 1\): 0 of 4.*'mid' \(label 2\): 0 of 4"):
        chosen = sift(FixedPrediction(), dataset, torch.device("cpu"), "high", 4, progress=False)
    assert [len(i) for i in chosen.indices] == [4, 0, 0]
    # the four brightest "zeta" images, most confident first
    conf = chosen.predictions.confidence
    assert np.all(np.diff(conf[chosen.indices[0]]) <= 0)
    assert conf[chosen.indices[0]].min() >= np.sort(conf[:6])[-4]
    # low mode: every class has 6 candidates, so asking for 4 needs no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        low = sift(FixedPrediction(), dataset, torch.device("cpu"), "low", 4, progress=False)
    assert [len(i) for i in low.indices] == [4, 4, 4]


# -- command line -------------------------------------------------------------------------------
def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_cli(root, ckpt, out, mode, num_images):
    args = image_sift.get_args_parser().parse_args([
        "--model_name", MODEL, "--data_name", "decoy_digits", "--model_path", str(ckpt),
        "--data_path", str(root), "--image_path", str(out), "--mode", mode,
        "--num_images", str(num_images), "--batch_size", "8", "--workers", "0",
        "--device", "cpu", "--no_progress"])
    return image_sift.main(args)


def test_cli_writes_copies_csv_and_classes(tmp_path):
    root = make_image_folder(tmp_path / "data")
    ckpt = make_checkpoint(tmp_path / "model.pth")
    out = tmp_path / "sift" / "low"
    selection = run_cli(root, ckpt, out, "low", 3)

    assert (out / "classes.txt").read_text().split() == CLASSES
    rows = read_csv(out / "sift.csv")
    assert list(rows[0]) == list(image_sift.CSV_COLUMNS)
    assert len(rows) == 9 and [len(i) for i in selection.indices] == [3, 3, 3]
    p = selection.predictions
    for row, i in zip(rows, selection.chosen()):
        assert row["file"] == selection.files[i]
        assert (out / row["file"]).read_bytes() == (root / "train" / row["file"]).read_bytes()
        assert int(row["label"]) == CLASSES.index(row["class_name"]) == p.labels[i]
        assert int(row["prediction"]) == p.preds[i]
        assert float(row["confidence"]) == pytest.approx(p.confidence[i], abs=1e-6)
        assert float(row["p_true"]) <= float(row["confidence"]) + 1e-6
    copied = sorted(str(f.relative_to(out)) for f in out.rglob("*.png"))
    assert copied == sorted(r["file"] for r in rows)
    # the low-mode rule holds for what the model predicted
    expect = select_low(p.labels, p.preds, p.confidence, 3, 3)
    assert [list(a) for a in selection.indices] == [list(e) for e in expect]

    # a re-run removes its own stale images, keeps user files (annotations)
    note = out / rows[0]["file"].replace(".png", ".json")
    note.write_text("{}")
    run_cli(root, ckpt, out, "low", 1)
    rows = read_csv(out / "sift.csv")
    assert len(rows) == 3
    assert sorted(str(f.relative_to(out)) for f in out.rglob("*.png")) == sorted(
        r["file"] for r in rows)
    assert note.read_text() == "{}"


@pytest.mark.e2e
def test_cli_runs_as_a_script_from_the_repo_root():
    proc = subprocess.run([sys.executable, "core/image_sift.py", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--image_path" in proc.stdout and "--mode" in proc.stdout
