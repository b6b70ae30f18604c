"""Diagnosis measures, the diagnose CLI, gradient maps and figures (paper Fig. 2)."""
import csv
import json
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

import loaders
from loaders import Batch
import models
from core import diagnose, grad_calculate
from core.channel_stats import ChannelStatistics
from core.diagnose import image_background_share, off_mask_share
from core.visualize import (diagnosis_figures, gradient_map, overlay_figure,
                            plot_channel_heatmap, plot_high_low_overlays, score_gradients,
                            spread_over_classes)
from test_image_sift import CLASSES, MODEL, REPO, make_checkpoint, make_image_folder
from toy import conv_out, make_toy
from utils import load_weights

LAYER = "1"     # squeezenet: index 0 is the 3-channel classifier conv; 1 has 256 channels


def assert_png(path, min_bytes=1024):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > min_bytes


# -- measures by hand ----------------------------------------------------------------------------
def test_off_mask_share_by_hand():
    mass = torch.tensor([[1.0, 2.0, 3.0, 4.0],
                         [4.0, 0.0, 0.0, 4.0],
                         [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0],
                         [0.0, 1.0, 1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    share = off_mask_share(mass, mask, labels)
    # sample 0 (class 0): off channels 2,3 -> 7/10; sample 1 (class 1): off channel 0 -> 4/8
    np.testing.assert_allclose(share[:2].numpy(), [0.7, 0.5])
    assert torch.isnan(share[2])            # no gradient mass: undefined, not 0
    # numpy inputs work too, and the mask row follows the label
    np.testing.assert_allclose(off_mask_share(mass.numpy()[:2], mask.numpy(), [1, 0]).numpy(),
                               [1 / 10, 4 / 8])


def test_image_background_share_by_hand():
    grad_map = torch.tensor([[[1.0, 2.0], [3.0, 4.0]],
                             [[0.0, 5.0], [5.0, 0.0]]])
    background = torch.zeros(2, 1, 4, 4)
    background[0, 0, :2, :2] = 1.0          # top-left 2x2 block = cell (0, 0) fully background
    background[0, 0, 2:, 2] = 1.0           # half of cell (1, 1)
    background[1, 0, :, :] = 1.0
    background[1, 0, 0, 2] = 0.0            # a quarter of cell (0, 1) is object
    share = image_background_share(grad_map, background)
    np.testing.assert_allclose(share.numpy(), [(1 * 1 + 4 * 0.5) / 10, (5 * 0.75 + 5) / 10])


def test_diagnose_pass_on_toy_closed_form():
    # toy: Σ_hw |dy_n/dm_k| = |W[n, k]| · #{m_k > 0}, Σ_k |dy_n/dm_k| = Σ_k |W[n, k]| 1[m_k > 0]
    net = make_toy(channels=3, num_classes=4)
    x, labels = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 3, 2])
    obj = torch.zeros(4, 1, 4, 4)
    obj[:, :, 1:3, 1:3] = 1.0
    batch = Batch(x, labels, [f"c/{i}.png" for i in range(4)], obj,
                  torch.tensor([1, 1, 0, 1]).bool())
    mask = torch.tensor([[1.0, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]])
    known = torch.tensor([True, True, False, True])
    out = diagnose.diagnose(net, [batch], "conv", mask, torch.device("cpu"), progress=False,
                            known_classes=known)
    active = (conv_out(net, x) > 0).float()                           # [B, K, H, W]
    w = net.fc.weight.detach()[labels].abs()                          # [B, K]
    mass = w * active.sum(dim=(2, 3))
    expect_off = (mass * (1 - mask[labels])).sum(1) / mass.sum(1)
    np.testing.assert_allclose(out["off"][[0, 1, 2]], expect_off[[0, 1, 2]].numpy(), rtol=1e-6)
    assert np.isnan(out["off"][3])                                    # class 2: no statistics
    spatial = (w[:, :, None, None] * active).sum(dim=1)               # [B, H, W]
    expect_bg = (spatial * (1 - obj[:, 0])).sum((1, 2)) / spatial.sum((1, 2))
    np.testing.assert_allclose(out["bg"][[0, 1, 3]], expect_bg[[0, 1, 3]].numpy(), rtol=1e-6)
    assert np.isnan(out["bg"][2])                                     # not annotated
    assert out["files"] == batch[2] and list(out["labels"]) == [0, 1, 3, 2]


def test_rank_order_puts_most_strayed_first_and_nan_last():
    order = diagnose.rank_order(np.array([0.2, np.nan, 0.9, 0.2, 0.5]))
    assert list(order) == [2, 4, 0, 3, 1]


# -- gradient maps ------------------------------------------------------------------------------
def test_gradient_map_closed_form_on_toy():
    # toy: dy_n/dm_k = W[n, k] * 1[m_k > 0]; 1x1 conv keeps the size, so no resampling
    net = make_toy(channels=3, num_classes=4)
    x = torch.randn(3, 1, 5, 5)
    labels = torch.tensor([0, 3, 2])
    w = net.fc.weight.detach()[labels].abs()                        # [B, K]
    raw = ((conv_out(net, x) > 0).float() * w[:, :, None, None]).sum(dim=1)
    lo, hi = raw.amin(dim=(1, 2), keepdim=True), raw.amax(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(gradient_map(net, x, labels, "conv"), (raw - lo) / (hi - lo))


def test_gradient_map_equals_per_sample_loop():
    torch.manual_seed(0)
    net = models.load_model(MODEL, 1, 3, image_size=32)
    net.train()
    x, labels = torch.randn(4, 1, 32, 32), torch.tensor([0, 2, 1, 2])
    maps = gradient_map(net, x, labels, LAYER)
    assert net.training                                   # mode restored
    assert maps.shape == (4, 32, 32)
    assert maps.amin() >= 0 and maps.amax() <= 1
    name = models.load_modules(net, [LAYER])[0][0]
    net.eval()
    for b in range(4):       # one image at a time, by hand
        feats = {}
        handle = net.get_submodule(name).register_forward_hook(
            lambda m, i, o: feats.__setitem__("m", o))
        try:
            xb = x[b:b + 1].clone().requires_grad_(True)
            score = net(xb)[0, labels[b]]
            g, = torch.autograd.grad(score, feats["m"])
        finally:
            handle.remove()
        s = torch.nn.functional.interpolate(g.abs().sum(dim=1, keepdim=True), size=(32, 32),
                                            mode="bilinear", align_corners=False)[0, 0]
        expect = (s - s.min()) / (s.max() - s.min())
        torch.testing.assert_close(maps[b], expect, rtol=1e-4, atol=1e-5)


# -- figures ------------------------------------------------------------------------------------
def test_heatmap_and_overlay_figures_are_written(tmp_path):
    rng = np.random.default_rng(0)
    fig = plot_channel_heatmap(rng.random((3, 40)), CLASSES, "toy layer", tmp_path / "h.png")
    assert fig.axes[0].get_xlabel() == "kernel" and fig.axes[0].get_ylabel() == "class"
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == CLASSES
    assert_png(tmp_path / "h.png")
    images, maps = rng.random((5, 16, 16, 1)), rng.random((5, 16, 16))
    overlay_figure(images, maps, [f"img {i}" for i in range(5)], tmp_path / "o.png", ncols=3)
    assert_png(tmp_path / "o.png")
    fig = plot_high_low_overlays(images[:3], maps[:3], rng.random((2, 16, 16, 3)), maps[:2],
                                 path=tmp_path / "hl.png")
    assert_png(tmp_path / "hl.png")
    assert [ax.get_ylabel() for ax in fig.axes[::3]] == ["high confidence", "low confidence"]
    plt.close("all")


def test_spread_over_classes_round_robin():
    assert spread_over_classes([0, 0, 0, 1, 2, 2], 5) == [0, 3, 4, 1, 5]
    assert spread_over_classes([1, 1], 5) == [0, 1]


def test_diagnosis_figures_from_folders(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class=2)
    dataset = loaders.build_dataset("decoy_digits", root, "train", 1, train_transform=False)
    torch.manual_seed(0)
    net = models.load_model(MODEL, 1, 3, image_size=32).eval()
    diagnosis_figures(net, dataset, dataset, LAYER, tmp_path / "fig", num_images=3)
    assert_png(tmp_path / "fig" / "overlays_high_low.png")
    diagnosis_figures(net, dataset, None, LAYER, tmp_path / "fig", 2, filename="high.png")
    assert_png(tmp_path / "fig" / "high.png")
    plt.close("all")


# -- command line -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """Tiny data (train + test, masks for some test images), a random model, its statistics."""
    tmp = tmp_path_factory.mktemp("diagnose")
    root = make_image_folder(tmp / "data", splits=("train", "test"))
    for name in CLASSES:                   # masks for two test images per class
        folder = root / "masks" / "test" / name
        folder.mkdir(parents=True)
        for i in range(2):
            m = np.zeros((32, 32), np.uint8)
            m[8:24, 8:24] = 255
            Image.fromarray(m, "L").save(folder / f"img{i}.png")
    ckpt = make_checkpoint(tmp / "model.pth")
    grads = tmp / "grads"
    grad_calculate.main(grad_calculate.get_args_parser().parse_args([
        "--model_name", MODEL, "--data_name", "decoy_digits", "--model_path", str(ckpt),
        "--data_path", str(root / "train"), "--grad_path", str(grads), "--layers", LAYER,
        "--noise_draws", "1", "--noise_delta", "0", "--workers", "0", "--device", "cpu",
        "--no_progress"]))
    return tmp, root, ckpt, grads


def diagnose_args(root, ckpt, grads, out, *extra):
    return diagnose.get_args_parser().parse_args([
        "--model_name", MODEL, "--data_name", "decoy_digits", "--model_path", str(ckpt),
        "--grad_path", str(grads), "--data_path", str(root), "--data_type", "test",
        "--layer", LAYER, "--out_dir", str(out), "--num_overlays", "4", "--batch_size", "32",
        "--workers", "0", "--device", "cpu", "--no_progress", *extra])


def test_diagnose_cli_end_to_end(experiment, capsys):
    tmp, root, ckpt, grads = experiment
    out = tmp / "diagnosis"
    summary = diagnose.main(diagnose_args(root, ckpt, grads, out, "--mask_dir",
                                          str(root / "masks"), "--high_path", str(root / "train")))
    printed = capsys.readouterr().out
    assert "misclassified" in printed and "correct" in printed

    with open(out / "diagnosis.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(diagnose.CSV_COLUMNS)
    assert len(rows) == 18 and [int(r["rank"]) for r in rows] == list(range(1, 19))
    shares = [float(r["off_mask_share"]) for r in rows]
    assert shares == sorted(shares, reverse=True)
    assert all(0 <= s <= 1 for s in shares) and shares[0] > shares[-1]
    annotated = {r["file"] for r in rows if r["background_share"] != ""}
    assert annotated == {f"{c}/img{i}.png" for c in CLASSES for i in range(2)}
    assert all(0 <= float(r["background_share"]) <= 1 for r in rows if r["file"] in annotated)

    # the shares agree with the saved statistics' mask, recomputed for the top image
    stats = ChannelStatistics.load(grads / "channel_stats.npz")
    name = models.load_modules(models.load_model(MODEL, 1, 3, image_size=32), [LAYER])[0][0]
    net = models.load_model(MODEL, 1, 3, image_size=32)
    load_weights(net, ckpt, MODEL)
    net.eval()
    ds = loaders.build_dataset("decoy_digits", root, "test", 1, train_transform=False)
    top = rows[0]
    image = ds[[rel for rel, _ in ds.samples].index(top["file"])][0][None]
    g, _ = score_gradients(net, image, torch.tensor([int(top["label"])]), name)
    mass = g.abs().sum(dim=(2, 3))[0]
    expect = (mass * (1 - stats.mask(name)[int(top["label"])])).sum() / mass.sum()
    assert float(top["off_mask_share"]) == pytest.approx(float(expect), abs=1e-5)

    saved = json.loads((out / "summary.json").read_text())
    assert saved["num_images"] == 18 and saved["layer"] == name
    assert summary["num_correct"] + summary["num_misclassified"] == 18
    for png in ("overlays_strayed.png", "overlays_typical.png", "overlays_high_low.png"):
        assert_png(out / png)
    assert list((out / "runs").glob("events.out.tfevents.*"))
    plt.close("all")


def test_diagnose_refuses_foreign_statistics(experiment):
    tmp, root, ckpt, _ = experiment
    name = models.load_modules(models.load_model(MODEL, 1, 3, image_size=32), [LAYER])[0][0]
    foreign = tmp / "foreign.npz"
    ChannelStatistics({name: 7}, 3).save(foreign)
    with pytest.raises(ValueError, match=rf"layer '{name}'.* 7 channels.* 256"):
        diagnose.main(diagnose_args(root, ckpt, foreign, tmp / "out_foreign"))
    other = tmp / "other_layer.npz"
    ChannelStatistics({"features.0": 64}, 3).save(other)
    with pytest.raises(ValueError, match="no statistics for layer"):
        diagnose.main(diagnose_args(root, ckpt, other, tmp / "out_other"))
    assert not (tmp / "out_foreign" / "diagnosis.csv").exists()


def test_diagnose_refuses_statistics_of_other_weights(experiment):
    tmp, root, ckpt, grads = experiment
    state = torch.load(ckpt, weights_only=True)
    weights = state["model"] if "model" in state else state
    key = next(k for k, v in weights.items() if v.is_floating_point())
    weights[key] = weights[key] * 1.001
    other = tmp / "other_run.pth"
    torch.save(state, other)
    with pytest.raises(ValueError, match=r"channel_stats.npz was computed on other weights"):
        diagnose.main(diagnose_args(root, other, grads, tmp / "out_other_run"))
    assert not (tmp / "out_other_run" / "diagnosis.csv").exists()
    diagnose.main(diagnose_args(root, other, grads, tmp / "out_other_run",
                                "--allow_foreign_stats"))
    assert (tmp / "out_other_run" / "diagnosis.csv").is_file()


@pytest.mark.e2e
def test_diagnose_runs_as_a_script_from_the_repo_root():
    proc = subprocess.run([sys.executable, "core/diagnose.py", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--grad_path" in proc.stdout and "--mask_dir" in proc.stdout


def test_class_background_shares_by_hand():
    from core.diagnose import class_background_shares
    from toy import make_background_toy
    net, x, fg = make_background_toy(batch=4)    # kernel 0 fires on background, 1 on object
    labels = torch.tensor([0, 0, 2, 2])
    annotated = torch.tensor([True, True, True, False])
    loader = [Batch(x[:2], labels[:2], ["a", "b"], fg[:2], annotated[:2]),
              Batch(x[2:], labels[2:], ["c", "d"], fg[2:], annotated[2:])]
    shares = class_background_shares(net, loader, "conv", 3, torch.device("cpu"))
    w = net.fc.weight.detach().abs()
    expect = [12 * w[n, 0] / (12 * w[n, 0] + 4 * w[n, 1]) for n in (0, 2)]
    assert np.isnan(shares[1])
    np.testing.assert_allclose(shares[[0, 2]], torch.stack(expect).numpy(), rtol=1e-6)
