"""FGSM, Grad-CAM, the noise-robustness study (Fig. 3), Figs. 4-5 and the ablation driver."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train
from core import grad_calculate, image_sift, robustness
from fakedata import make_image_folder
from models import load_model
from preprocessing import labelme_to_mask, synthetic_labelme
from scripts import ablation, figures
from toy import conv_out, make_toy
from utils import save_weights

# a one-epoch model on 9 images leaves some classes without correct images to sift
pytestmark = pytest.mark.filterwarnings("ignore:.*fewer correctly classified images")

COMMON = ["--model_name", "smallcnn", "--data_name", "digits", "--workers", "0",
          "--no_progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A quickstart-like experiment folder on tiny data: model, sifted images, statistics,
    masks; ``work`` is shared by the ablation tests so the fine-tune control runs once."""
    tmp = tmp_path_factory.mktemp("abl")
    data = make_image_folder(tmp / "data", num_classes=3, per_class=3, masks=True)
    exp = tmp / "exp"
    train.main(train.get_args_parser().parse_args(
        COMMON + ["--data_dir", str(data), "--model_dir", str(exp / "models"),
                  "--num_epochs", "1", "--batch_size", "9"]))
    ori = exp / "models" / "model_ori.pth"
    sift = COMMON + ["--model_path", str(ori), "--data_path", str(data)]
    for mode, n in (("high", "2"), ("low", "2")):
        image_sift.main(image_sift.get_args_parser().parse_args(
            sift + ["--mode", mode, "--num_images", n, "--image_path", str(exp / "sift" / mode)]))
    grad_calculate.main(grad_calculate.get_args_parser().parse_args(
        COMMON + ["--model_path", str(ori), "--data_path", str(exp / "sift" / "high"),
                  "--grad_path", str(exp / "grads"), "--noise_draws", "1", "--noise_delta", "0",
                  "--allow_empty_classes", "--no_figures"]))
    synthetic_labelme.main(synthetic_labelme.get_args_parser().parse_args(
        ["--image_dir", str(exp / "sift" / "low"), "--gt_mask_dir", str(data / "masks" / "train"),
         "--json_dir", str(exp / "labelme"), "--per_class", "2"]))
    labelme_to_mask.main(labelme_to_mask.get_args_parser().parse_args(
        ["--json_dir", str(exp / "labelme"), "--mask_dir", str(exp / "masks"),
         "--image_dir", str(exp / "sift" / "low")]))
    return data, exp, tmp / "work"


# -- FGSM ------------------------------------------------------------------------------------
def test_fgsm_is_eps_sign_of_pixel_gradient():
    torch.manual_seed(0)
    model = load_model("smallcnn", 3, 4, image_size=32).eval()
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    eps = 8 / 255
    pixels = torch.rand(3, 3, 16, 16) * (1 - 2 * eps) + eps   # far from 0/1: no clamping
    pixels[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 0.01, 0.99])  # some that do clamp
    labels = torch.tensor([0, 2, 3])
    adv = robustness.fgsm(model, (pixels - m) / s, labels, eps, mean, std)

    x = pixels.clone().requires_grad_(True)
    loss = F.cross_entropy(model((x - m) / s), labels, reduction="sum")
    grad, = torch.autograd.grad(loss, x)
    adv_pixels = adv * s + m
    expected = (pixels + eps * grad.sign()).clamp(0, 1)
    assert torch.allclose(adv_pixels, expected, atol=1e-6)
    inside = (pixels > eps) & (pixels < 1 - eps)
    assert torch.allclose((adv_pixels - pixels)[inside], (eps * grad.sign())[inside], atol=1e-6)
    assert (adv_pixels - pixels).abs().max() <= eps + 1e-6
    assert adv_pixels.min() >= -1e-6 and adv_pixels.max() <= 1 + 1e-6
    assert not model.training


# -- Grad-CAM --------------------------------------------------------------------------------
def test_grad_cam_matches_hand_computation():
    net = make_toy(seed=1, in_channels=1, channels=3, num_classes=4)
    x = torch.randn(2, 1, 5, 6)
    labels = torch.tensor([1, 3])
    cam = figures.grad_cam_maps(net, x, labels, "conv")
    m = conv_out(net, x)                                  # [B, K, H, W]
    W = net.fc.weight.detach()                            # dy_n/dm_k = W[n,k] 1[m_k > 0]
    dy_dm = W[labels][:, :, None, None] * (m > 0).float()
    w = dy_dm.mean(dim=(2, 3), keepdim=True)
    expected = (w * m).sum(dim=1).clamp(min=0)
    assert cam.shape == (2, 5, 6)
    assert torch.allclose(cam, expected, atol=1e-6)
    up = figures.grad_cam(net, x, labels, "conv")
    big = F.interpolate(expected[:, None], size=(5, 6), mode="bilinear", align_corners=False)[:, 0]
    lo, hi = big.amin(dim=(1, 2), keepdim=True), big.amax(dim=(1, 2), keepdim=True)
    assert torch.allclose(up, (big - lo) / (hi - lo), atol=1e-6)
    assert not any(mod._forward_hooks for mod in net.modules())


# -- Fig. 3 ----------------------------------------------------------------------------------
def test_robustness_random_model(experiment, tmp_path):
    data = experiment[0]
    torch.manual_seed(3)
    path = tmp_path / "random.pth"
    save_weights(load_model("smallcnn", 1, 3, image_size=32), path, model_name="smallcnn")
    out = tmp_path / "fig3"
    rows = robustness.main(robustness.get_args_parser().parse_args(
        COMMON[:4] + ["--device", "cpu", "--model_path", str(path), "--data_dir", str(data),
                      "--num_images", "8", "--deltas", "0,0.5", "--repeats", "2",
                      "--eps", "8/255", "--out_dir", str(out)]))
    assert [r["delta"] for r in rows] == [0.0, 0.5]
    assert rows[0]["normal_true"] == 1.0 and rows[0]["num_normal"] > 0
    if rows[0]["num_adversarial"]:   # adversarials were chosen to flip: at δ = 0 none is right
        assert rows[0]["adversarial_true"] == 0.0 and rows[0]["adversarial_same_false"] == 1.0
    lines = (out / "noise_robustness.csv").read_text().splitlines()
    assert lines[0].startswith("delta,normal_true") and len(lines) == 3
    assert (out / "noise_robustness.png").stat().st_size > 1000
    summary = json.loads((out / "noise_robustness.json").read_text())
    assert summary["num_normal"] == rows[0]["num_normal"] and summary["layer"]


# -- Figs. 4 and 5 ---------------------------------------------------------------------------
def test_figures_written(experiment, tmp_path):
    data, exp, _ = experiment
    ori = str(exp / "models" / "model_ori.pth")
    result = {"classes": ["c0", "c1", "c2"], "per_class": [0.5, 0.9, None], "top1": 0.7}
    treated = {"classes": ["c0", "c1", "c2"], "per_class": [0.8, 0.85, 1.0], "top1": 0.88}
    (tmp_path / "o.json").write_text(json.dumps(result))
    (tmp_path / "t.json").write_text(json.dumps(treated))
    parse = figures.get_args_parser().parse_args
    figures.main_per_class(parse(["per_class", "--original_json", str(tmp_path / "o.json"),
                                  "--treated_json", str(tmp_path / "t.json"),
                                  "--treated_labels", "+All", "--sort",
                                  "--out", str(tmp_path / "fig4.png")]))
    assert (tmp_path / "fig4.png").stat().st_size > 1000
    figures.main_visual(parse(["visual", *COMMON[:4], "--device", "cpu",
                               "--original_model_path", ori, "--space_model_path", ori,
                               "--channel_model_path", ori, "--data_dir", str(data),
                               "--num_images", "2", "--out", str(tmp_path / "fig5.png")]))
    assert (tmp_path / "fig5.png").stat().st_size > 1000
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in sorted((data / "test" / "c1").iterdir())[:1]:
        (flat / f.name).write_bytes(f.read_bytes())
    figures.main_visual(parse(["visual", *COMMON[:4], "--device", "cpu",
                               "--original_model_path", ori, "--image_dir", str(flat),
                               "--out", str(tmp_path / "fig5_flat.png")]))
    assert (tmp_path / "fig5_flat.png").stat().st_size > 1000


# -- ablations -------------------------------------------------------------------------------
@pytest.mark.parametrize("study,settings", [("expansion", "0,1"), ("annotations", "0,2"),
                                            ("depth", "0,1")])
def test_ablation_writes_table_and_plot(experiment, tmp_path, study, settings):
    data, exp, work = experiment
    argv = [study, "--exp_dir", str(exp), "--model_name", "smallcnn", "--data_name", "digits",
            "--data_dir", str(data), "--settings", settings, "--num_epochs", "1",
            "--batch_size", "9", "--noise_draws", "1", "--noise_delta", "0",
            "--allow_empty_classes", "--no_figures", "--work_dir", str(work),
            "--out_dir", str(tmp_path / "results"), "--no_progress", "--device", "cpu"]
    rows = ablation.main(ablation.get_args_parser().parse_args(argv))
    assert [r["setting"] for r in rows] == [int(s) for s in settings.split(",")]
    assert len({r["epoch0_acc"] for r in rows}) == 1
    table = (tmp_path / "results" / f"ablation_{study}.md").read_text()
    assert table.count("\n| +") == 2 and "control" in table
    assert (tmp_path / "results" / f"ablation_{study}.png").stat().st_size > 1000
    if study == "annotations":
        assert rows[0]["annotated"] == 0 and rows[1]["annotated"] > 0
    if study == "expansion":   # a second call reuses the finished runs
        done = work / "expansion" / "space_px1" / "models" / "result.json"
        stamp = done.stat().st_mtime_ns
        again = ablation.main(ablation.get_args_parser().parse_args(argv))
        assert done.stat().st_mtime_ns == stamp
        assert [r["final_acc"] for r in again] == [r["final_acc"] for r in rows]


@pytest.mark.e2e
def test_ablation_runs_each_treatment_as_a_local_job(experiment, tmp_path):
    """--launcher local: every treatment run (and the control) is its own submitit job; the
    table equals the one of the in-process runs with the same arguments."""
    data, exp, _ = experiment
    argv = ["expansion", "--exp_dir", str(exp), "--model_name", "smallcnn", "--data_name",
            "digits", "--data_dir", str(data), "--settings", "0,1", "--num_epochs", "1",
            "--batch_size", "9", "--work_dir", str(tmp_path / "work"), "--no_progress",
            "--device", "cpu", "--out_dir", str(tmp_path / "res")]
    local = ablation.main(ablation.get_args_parser().parse_args(
        argv + ["--launcher", "local", "--parallel", "2", "--time_min", "10"]))
    jobs_dir = tmp_path / "work" / "jobs"
    assert len(list(jobs_dir.glob("*/*_result.pkl"))) == 3   # 2 settings + the control
    argv[argv.index("--work_dir") + 1] = str(tmp_path / "again")
    inline = ablation.main(ablation.get_args_parser().parse_args(argv))
    assert [r["final_acc"] for r in local] == [r["final_acc"] for r in inline]
