"""train.py and test.py end to end on a tiny folder dataset."""
import json

import pytest
import torch

import loaders
import models
import test as test_script
import train
from fakedata import make_image_folder
from utils import load_checkpoint, load_weights


def train_args(tmp_path, data, out, *extra):
    return train.get_args_parser().parse_args([
        "--model_name", "smallcnn", "--data_name", "digits", "--data_dir", str(data),
        "--model_dir", str(out), "--num_epochs", "2", "--batch_size", "8", "--workers", "0",
        "--no_progress", "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"), num_classes=3, per_class=8)


def test_train_end_to_end_and_files(tmp_path, data):
    result = train.main(train_args(tmp_path, data, tmp_path / "run"))
    run = tmp_path / "run"
    for name in ("model_ori.pth", "last.pth", "result.json", "args.json", "epochs.jsonl"):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*"))
    lines = [json.loads(l) for l in (run / "epochs.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2] and "test/top1" in lines[0]
    saved = json.loads((run / "result.json").read_text())
    assert saved["best_acc"] == result["best_acc"] == max(l["test/top1"] for l in lines)
    assert not list(run.glob(".*.tmp"))


def test_resume_equals_straight_run(tmp_path, data, interrupt_at_epoch):
    train.main(train_args(tmp_path, data, tmp_path / "straight"))
    interrupt_at_epoch(2)
    with pytest.raises(KeyboardInterrupt):
        train.main(train_args(tmp_path, data, tmp_path / "resumed"))
    assert load_checkpoint(tmp_path / "resumed" / "last.pth")["epoch"] == 1
    interrupt_at_epoch(None)
    train.main(train_args(tmp_path, data, tmp_path / "resumed", "--resume"))
    a = load_checkpoint(tmp_path / "straight" / "last.pth")
    b = load_checkpoint(tmp_path / "resumed" / "last.pth")
    assert b["epoch"] == 2
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=1e-6)
    lines = (tmp_path / "resumed" / "epochs.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]


def test_num_classes_mismatch(tmp_path, data):
    with pytest.raises(ValueError, match="--num_classes 5 but .* has 3 classes"):
        train.main(train_args(tmp_path, data, tmp_path / "r", "--num_classes", "5"))


def test_test_script_equals_hand_count(tmp_path, data):
    torch.manual_seed(0)
    model = models.load_model("smallcnn", 1, 3, image_size=32)
    from utils import save_weights
    save_weights(model, tmp_path / "m.pth", model_name="smallcnn", num_classes=3, in_channels=1)
    args = test_script.get_args_parser().parse_args([
        "--model_name", "smallcnn", "--data_name", "digits", "--data_dir", str(data),
        "--model_path", str(tmp_path / "m.pth"), "--workers", "0", "--no_progress",
        "--device", "cpu"])
    result = test_script.main(args)
    # hand count: one image at a time
    ds = loaders.build_dataset("digits", data, "test", train_transform=False)
    model.eval()
    cm = torch.zeros(3, 3, dtype=torch.long)
    with torch.no_grad():
        for i in range(len(ds)):
            x, y, _ = ds[i]
            cm[y, model(x[None]).argmax().item()] += 1
    assert result["confusion_matrix"] == cm.tolist()
    assert result["top1"] == pytest.approx(cm.diag().sum().item() / len(ds))
    assert result["per_class"] == pytest.approx((cm.diag() / cm.sum(1)).tolist())
    saved = json.loads((tmp_path / "test_test.json").read_text())
    assert saved["top1"] == result["top1"] and saved["classes"] == ["c0", "c1", "c2"]


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    from utils import save_weights
    save_weights(models.load_model("smallcnn", 1, 10), tmp_path / "ten.pth",
                 model_name="smallcnn", num_classes=10, in_channels=1)
    with pytest.raises(ValueError, match=r"ten\.pth does not fit smallcnn.*num_classes=10.*\(3, 128\)"):
        load_weights(models.load_model("smallcnn", 1, 3), tmp_path / "ten.pth", "smallcnn")
    save_weights(models.load_model("squeezenet", 1, 3), tmp_path / "sq.pth", model_name="squeezenet")
    with pytest.raises(ValueError, match="saved from 'squeezenet'"):
        load_weights(models.load_model("smallcnn", 1, 3), tmp_path / "sq.pth", "smallcnn")
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_weights(models.load_model("smallcnn", 1, 3), tmp_path / "nothing.pth", "smallcnn")
