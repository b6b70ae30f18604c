"""End to end on a tiny dataset: train → sift → statistics → labelme → masks → treatment."""
import json

import numpy as np
import pytest

import test as test_script
import train
import train_model_doctor
from core import grad_calculate, image_sift
from fakedata import make_image_folder
from preprocessing import labelme_to_mask, synthetic_labelme

COMMON = ["--model_name", "smallcnn", "--data_name", "digits", "--workers", "0",
          "--no_progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipe")
    data = make_image_folder(tmp / "data", num_classes=3, per_class=10, masks=True)
    out = tmp / "out"
    train.main(train.get_args_parser().parse_args(
        COMMON + ["--data_dir", str(data), "--model_dir", str(out / "models"), "--num_epochs", "2",
                  "--batch_size", "10"]))
    ori = out / "models" / "model_ori.pth"
    sift = COMMON + ["--model_path", str(ori), "--data_path", str(data)]
    image_sift.main(image_sift.get_args_parser().parse_args(
        sift + ["--mode", "high", "--num_images", "4", "--image_path", str(out / "high")]))
    image_sift.main(image_sift.get_args_parser().parse_args(
        sift + ["--mode", "low", "--num_images", "3", "--image_path", str(out / "low")]))
    grad_calculate.main(grad_calculate.get_args_parser().parse_args(
        COMMON + ["--model_path", str(ori), "--data_path", str(out / "high"),
                  "--grad_path", str(out / "grads"), "--layers", "0,1", "--noise_draws", "3",
                  "--allow_empty_classes"]))
    assert synthetic_labelme.main(synthetic_labelme.get_args_parser().parse_args(
        ["--image_dir", str(out / "low"), "--gt_mask_dir", str(data / "masks" / "train"),
         "--json_dir", str(out / "labelme"), "--per_class", "3"])) == 0
    assert labelme_to_mask.main(labelme_to_mask.get_args_parser().parse_args(
        ["--json_dir", str(out / "labelme"), "--mask_dir", str(out / "masks"),
         "--image_dir", str(out / "low")])) == 0
    return data, out


def test_artifacts(pipeline):
    data, out = pipeline
    assert (out / "grads" / "channel_stats.npz").is_file()
    assert not list((out / "grads").glob("layer_*.npy"))   # the .npz is the one record
    with np.load(out / "grads" / "channel_stats.npz", allow_pickle=False) as z:
        assert z["layer0/mask"].shape == (3, 128) and z["layer1/mask"].ndim == 2
    assert (out / "grads" / "heatmap_layer_0.png").stat().st_size > 1000
    jsons = sorted(p.relative_to(out / "labelme") for p in (out / "labelme").rglob("*.json"))
    masks = sorted(p.relative_to(out / "masks") for p in (out / "masks").rglob("*.png"))
    assert jsons and [j.with_suffix(".png") for j in jsons] == masks
    # the traced mask matches the ground truth it came from
    from PIL import Image
    m = np.asarray(Image.open(out / "masks" / masks[0])) > 0
    gt = np.asarray(Image.open(data / "masks" / "train" / masks[0])) > 0
    assert (m & gt).sum() / (m | gt).sum() > 0.8


@pytest.mark.parametrize("alpha,beta,extra", [
    ("0.1", "0.5", []),
    ("0.1", "0", ["--noise_draws", "2", "--noise_delta", "0.1", "--second_term", "mask",
                  "--grad_mode", "relu", "--allow_foreign_stats"]),   # statistics: abs
])
def test_treatment_epoch0_equals_test_py(pipeline, tmp_path, alpha, beta, extra):
    data, out = pipeline
    res = tmp_path / "doctor"
    result = train_model_doctor.main(train_model_doctor.get_args_parser().parse_args(
        COMMON + ["--data_dir", str(data), "--ori_model_path", str(out / "models" / "model_ori.pth"),
                  "--model_dir", str(res), "--grad_dir", str(out / "grads"),
                  "--mask_dir", str(out / "masks"), "--alpha", alpha, "--beta", beta,
                  "--num_epochs", "1", "--batch_size", "10", "--expand_px", "1",
                  "--channel_layers", "0,1", *extra]))
    tested = test_script.main(test_script.get_args_parser().parse_args(
        COMMON + ["--data_dir", str(data), "--model_path", str(out / "models" / "model_ori.pth"),
                  "--result_path", str(tmp_path / "t.json")]))
    assert result["epoch0_acc"] == pytest.approx(tested["top1"])
    lines = [json.loads(l) for l in (res / "epochs.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [0, 1]
    assert lines[1]["train/channel"] > 0
    assert ("train/spatial" in lines[1]) == (beta != "0")
    assert (res / "model_doctor.pth").is_file() and (res / "result.json").is_file()


def test_treatment_refuses_bad_inputs(pipeline, tmp_path):
    data, out = pipeline
    base = COMMON + ["--data_dir", str(data), "--model_dir", str(tmp_path / "r"),
                     "--grad_dir", str(out / "grads"), "--num_epochs", "1"]
    parse = train_model_doctor.get_args_parser().parse_args
    with pytest.raises(FileNotFoundError, match="ori_model_path .*missing.pth"):
        train_model_doctor.main(parse(base + ["--ori_model_path", str(tmp_path / "missing.pth")]))
    ori = ["--ori_model_path", str(out / "models" / "model_ori.pth")]
    with pytest.raises(ValueError, match="--mask_dir"):
        train_model_doctor.main(parse(base + ori + ["--beta", "1"]))
    with pytest.raises(ValueError, match="no statistics for layer"):
        train_model_doctor.main(parse(base + ori + ["--beta", "0", "--channel_layers", "3"]))
    with pytest.raises(ValueError, match=r"channel_stats.npz was computed with "
                                         r"grad_mode='abs', this run has grad_mode='relu'"):
        train_model_doctor.main(parse(base + ori + ["--beta", "0", "--grad_mode", "relu"]))
    with pytest.raises(ValueError, match=r"channel_stats.npz was computed with model_name="
                                         r"'smallcnn', this run has model_name='alexnet'"):
        train_model_doctor.main(parse([a if a != "smallcnn" else "alexnet" for a in base]
                                      + ["--init", "scratch", "--beta", "0"]))


def test_treatment_refuses_statistics_of_other_weights(pipeline, tmp_path):
    """Another run of the same model: told apart by the weights fingerprint."""
    import torch
    data, out = pipeline
    ckpt = torch.load(out / "models" / "model_ori.pth", weights_only=True)
    first = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][first] = ckpt["model"][first] + 1e-4
    other = tmp_path / "other_run.pth"
    torch.save(ckpt, other)
    args = COMMON + ["--data_dir", str(data), "--model_dir", str(tmp_path / "r"),
                     "--grad_dir", str(out / "grads"), "--num_epochs", "1", "--beta", "0",
                     "--batch_size", "10", "--ori_model_path", str(other)]
    parse = train_model_doctor.get_args_parser().parse_args
    with pytest.raises(ValueError, match=r"channel_stats.npz was computed on other weights "
                                         r"\(.*model_ori.pth.*--allow_foreign_stats"):
        train_model_doctor.main(parse(args))
    assert not (tmp_path / "r").exists()
    result = train_model_doctor.main(parse(args + ["--allow_foreign_stats"]))
    assert (tmp_path / "r" / "model_doctor.pth").is_file() and "epoch0_acc" in result


def test_mask_size_mismatch_stops_treatment_before_any_output(pipeline, tmp_path):
    import shutil
    from PIL import Image
    data, out = pipeline
    masks = tmp_path / "masks"
    shutil.copytree(out / "masks", masks)
    first = sorted(masks.rglob("*.png"))[0]
    Image.new("L", (20, 20)).save(first)
    res = tmp_path / "r"
    with pytest.raises(ValueError, match=rf"mask .*{first.name} is 20x20 \(WxH\) but its image"):
        train_model_doctor.main(train_model_doctor.get_args_parser().parse_args(
            COMMON + ["--data_dir", str(data), "--model_dir", str(res),
                      "--ori_model_path", str(out / "models" / "model_ori.pth"),
                      "--grad_dir", str(out / "grads"), "--mask_dir", str(masks),
                      "--alpha", "0.1", "--beta", "1", "--num_epochs", "1"]))
    assert not res.exists()


def test_treatment_with_background_kernels_and_replay(pipeline, tmp_path):
    data, out = pipeline
    res = tmp_path / "doctor"
    train_model_doctor.main(train_model_doctor.get_args_parser().parse_args(
        COMMON + ["--data_dir", str(data), "--ori_model_path", str(out / "models" / "model_ori.pth"),
                  "--model_dir", str(res), "--mask_dir", str(out / "masks"),
                  "--alpha", "0", "--beta", "0", "--gamma", "0.5", "--kernel_layers=-1,-2",
                  "--replay_annotated", "2", "--num_epochs", "1", "--batch_size", "10"]))
    line = [json.loads(l) for l in (res / "epochs.jsonl").read_text().splitlines()][-1]
    assert line["train/kernel"] > 0
    assert {k for k in line if k.startswith("kernels/")} == {"kernels/0.0", "kernels/1.0"}
    with pytest.raises(ValueError, match="--replay_annotated needs masks"):
        train_model_doctor.main(train_model_doctor.get_args_parser().parse_args(
            COMMON + ["--data_dir", str(data), "--model_dir", str(tmp_path / "r2"),
                      "--ori_model_path", str(out / "models" / "model_ori.pth"),
                      "--alpha", "0", "--beta", "0", "--replay_annotated", "2"]))


def test_treatment_writes_the_released_file_and_keeps_out_of_anothers_folder(pipeline, tmp_path):
    """--res_model_path names the treated model file (released); in the released layout it
    shares models/ with train.py, so the treatment's records go to a folder of their own and
    train.py's last.pth is neither continued nor replaced."""
    data, out = pipeline
    shared = tmp_path / "models"
    shared.mkdir()
    (shared / "last.pth").write_bytes((out / "models" / "last.pth").read_bytes())
    argv = COMMON + ["--data_dir", str(data),
                     "--ori_model_path", str(out / "models" / "model_ori.pth"),
                     "--res_model_path", str(shared / "model_optim.pth"), "--grad_dir",
                     str(out / "grads"), "--beta", "0", "--num_epochs", "1", "--batch_size", "10",
                     "--log_dir", str(tmp_path / "runs")]
    parse = train_model_doctor.get_args_parser().parse_args
    with pytest.raises(ValueError, match="--model_dir .* contradicts --res_model_path"):
        train_model_doctor.main(parse(argv + ["--model_dir", str(tmp_path / "elsewhere")]))
    result = train_model_doctor.main(parse(argv + ["--resume"]))
    assert (shared / "model_optim.pth").is_file() and not (shared / "model_doctor.pth").exists()
    assert (shared / "last.pth").read_bytes() == (out / "models" / "last.pth").read_bytes()
    records = shared / "model_optim"
    assert json.loads((records / "result.json").read_text())["best_acc"] == result["best_acc"]
    result = train_model_doctor.main(parse(argv + ["--resume"]))   # its own state: finished
    assert result["epochs"] == 1
